#!/usr/bin/env bash
# Soak (issue 10): the release binary under mixed traffic for a bounded
# time, on 127.0.0.1 only: admitted requests, refusals (401, 404, 400, 429),
# WebSocket sessions through the tunnel, and a reload every 30 s. Every
# 10 s it prints palisade's RSS, open file descriptors and the responses
# so far; at the end, totals by status and the unexpected ones (5xx, socket
# errors, failed WebSocket sessions). Everything it starts is stopped by PID.
#   usage: bench/soak.sh [SECONDS=600]
#   ENGINE=hyper: both http1_engine switches on hyper (default: palisade, its own HTTP/1.1)
#   PALISADE_BIN=path: soak this binary (e.g. bench/pgo.sh's) instead of building release
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
need wrk python3 curl
SECS=${1:-600}
if [ -n "${PALISADE_BIN:-}" ]; then
  BIN=$(cd "$(dirname "$PALISADE_BIN")" && pwd)/$(basename "$PALISADE_BIN")
else
  cargo build --release --quiet
  BIN=$PWD/target/release/palisade
fi
UP=$(port); PAL=$(port); ADM=$(port)

# The upstream: answers 200 with a small body, and echoes WebSocket bytes
# after a 101 (enough of RFC 6455 for a byte-level tunnel check).
python3 - "$UP" >/dev/null 2>&1 <<'PY' & pids+=($!)
import socket, sys, threading
def serve(conn):
    try:
        buf = b""
        while True:
            while b"\r\n\r\n" not in buf:
                data = conn.recv(65536)
                if not data:
                    return
                buf += data
            head, buf = buf.split(b"\r\n\r\n", 1)
            if b"upgrade: websocket" in head.lower():
                conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                             b"Sec-WebSocket-Accept: x\r\n\r\n" + buf)
                while True:
                    data = conn.recv(65536)
                    if not data:
                        return
                    conn.sendall(data)
            length = 0
            for line in head.split(b"\r\n")[1:]:
                k, _, v = line.partition(b":")
                if k.strip().lower() == b"content-length":
                    length = int(v)
            while len(buf) < length:
                buf += conn.recv(65536)
            buf = buf[length:]
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\n{\"ok\":true}")
    except OSError:
        pass
    finally:
        conn.close()
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(1024)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
PY
wait_port "$UP"

export SOAK_JWT_SECRET=soak-secret-0123456789abcdef0123
cat > "$work/policy.toml" <<TOML
[server]
listen = "127.0.0.1:$PAL"
http1_engine = "${ENGINE:-palisade}"
[admin]
listen = "127.0.0.1:$ADM"
[log]
access_log = false
level = "warn"
[upstream]
url = "http://127.0.0.1:$UP"
http1_engine = "${ENGINE:-palisade}"
[auth.jwt]
hs256_secret = "\${SOAK_JWT_SECRET}"
[defaults]
auth = "none"
[[routes]]
name = "private"
path = "/private/**"
auth = "jwt"
[[routes]]
name = "limited"
path = "/limited/**"
rate_limits = [{ by = "ip", limit = 100, per = "1s" }]
[[routes]]
name = "ws"
path = "/ws"
methods = ["GET"]
[[routes]]
name = "api"
path = "/api/**"
TOML
"$BIN" run --config "$work/policy.toml" >"$work/palisade.log" 2>&1 & pal=$!; pids+=("$pal")
wait_port "$PAL"; wait_port "$ADM"
rss() { awk '/VmRSS/ {print $2}' "/proc/$pal/status"; }
fds() { ls "/proc/$pal/fd" | wc -l; }
echo "start: RSS $(rss) KiB, fds $(fds)"

# Mixed HTTP traffic: one wrk with a request mix (Lua), 32 connections.
cat > "$work/mix.lua" <<'LUA'
local paths = { "/api/items", "/api/items?page=2", "/private/me", "/nowhere/x", "/api/%2e%2e/admin", "/limited/x" }
local n = 0
request = function()
  n = n + 1
  local path = paths[(n % #paths) + 1]
  if n % 10 == 0 then
    return wrk.format("POST", "/api/items", { ["Content-Type"] = "application/json" }, '{"name":"soak"}')
  end
  return wrk.format("GET", path)
end
LUA
wrk -t1 -c32 -d"${SECS}s" -s "$work/mix.lua" --latency "http://127.0.0.1:$PAL/" > "$work/wrk.txt" 2>&1 & wrk_pid=$!; pids+=("$wrk_pid")

# WebSocket sessions through the tunnel, one after another, 4 in parallel.
python3 - "$PAL" "$SECS" > "$work/ws.txt" 2>&1 <<'PY' & ws_pid=$!; pids+=("$ws_pid")
import socket, sys, threading, time
port, secs = int(sys.argv[1]), float(sys.argv[2])
ok = failed = 0
lock = threading.Lock()
def worker():
    global ok, failed
    end = time.time() + secs
    while time.time() < end:
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"GET /ws HTTP/1.1\r\nHost: soak\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
            head = b""
            while b"\r\n\r\n" not in head:
                head += s.recv(4096)
            assert head.startswith(b"HTTP/1.1 101"), head[:40]
            rest = head.split(b"\r\n\r\n", 1)[1]
            for i in range(20):
                msg = b"soak message %d" % i
                s.sendall(msg)
                got = rest
                while len(got) < len(msg):
                    got += s.recv(4096)
                assert got == msg, (got, msg)
                rest = b""
            s.close()
            with lock: ok += 1
        except Exception as e:
            with lock: failed += 1
            time.sleep(0.1)
threads = [threading.Thread(target=worker) for _ in range(4)]
for t in threads: t.start()
for t in threads: t.join()
print(f"websocket sessions: {ok} ok, {failed} failed")
PY

start=$(date +%s)
next_reload=$((start + 30))
while kill -0 "$wrk_pid" 2>/dev/null; do
  sleep 10
  now=$(date +%s)
  if [ "$now" -ge "$next_reload" ]; then kill -HUP "$pal"; next_reload=$((now + 30)); fi
  total=$(curl -s -m 5 "http://127.0.0.1:$ADM/metrics" | awk '/^palisade_requests_total/ {s+=$NF} END {print s+0}')
  echo "t=$((now - start))s RSS $(rss) KiB fds $(fds) requests $total"
done
wait "$ws_pid" || true
echo "end: RSS $(rss) KiB, fds $(fds)"
echo "responses by status:"
curl -s -m 5 "http://127.0.0.1:$ADM/metrics" | awk '/^palisade_requests_total/ {match($0, /status="[0-9]+"/); st=substr($0, RSTART+8, 3); s[st]+=$NF} END {for (k in s) printf "  %s %d\n", k, s[k]}' | sort
echo "reloads: $(curl -s -m 5 "http://127.0.0.1:$ADM/metrics" | awk '/^palisade_config_reloads_total/ {print}' | tr '\n' ' ')"
grep -E "requests in|Socket errors|Latency " "$work/wrk.txt" | sed 's/^/wrk: /'
grep -q "Socket errors" "$work/wrk.txt" || echo "wrk: socket errors: none"
cat "$work/ws.txt"
unexpected=$(curl -s -m 5 "http://127.0.0.1:$ADM/metrics" | awk '/^palisade_requests_total/ && /status="5/ {s+=$NF} END {print s+0}')
echo "unexpected: 5xx responses $unexpected"
