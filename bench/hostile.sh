#!/usr/bin/env bash
# Memory under hostile clients (issue 10): the release binary's RSS while
# thousands of connections sit idle, stall mid-head, trickle bodies or
# churn, and after they are gone; an ordinary request is timed through each
# phase to show others are still served. `tests/hostile.rs` asserts the
# behaviour; this script reports the memory. Loopback only, bounded, every
# process stopped by PID.
#   usage: bench/hostile.sh [CONNECTIONS=5000]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
need python3
CONNS=${1:-5000}
ulimit -n $((CONNS * 2 + 1024)) 2>/dev/null || true
cargo build --release --quiet
BIN=$PWD/target/release/palisade
UP=$(port); PAL=$(port); ADM=$(port)

python3 - "$UP" >/dev/null 2>&1 <<'PY' & pids+=($!)
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        self.send_response(200); self.send_header("content-length", "2"); self.end_headers(); self.wfile.write(b"ok")
    do_POST = do_GET
    def log_message(self, *a): pass
class S(ThreadingHTTPServer):
    request_queue_size = 1024
S(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
wait_port "$UP"
cat > "$work/policy.toml" <<TOML
[server]
listen = "127.0.0.1:$PAL"
header_read_timeout = "5s"
idle_timeout = "20s"
max_connections = 20000
[admin]
listen = "127.0.0.1:$ADM"
[log]
access_log = false
level = "error"
[upstream]
url = "http://127.0.0.1:$UP"
[defaults]
auth = "none"
timeout = "5s"
[[routes]]
name = "all"
path = "/**"
TOML
"$BIN" run --config "$work/policy.toml" >"$work/palisade.log" 2>&1 & pal=$!; pids+=("$pal")
wait_port "$PAL"

python3 - "$PAL" "$pal" "$CONNS" <<'PY'
import socket, sys, time, http.client
port, pid, n = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
def rss():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1])
def probe():
    t = time.time()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", "/probe"); r = c.getresponse(); r.read(); c.close()
    return r.status, (time.time() - t) * 1000
probe()
base = rss()
print(f"idle RSS: {base} KiB")
def phase(name, socks):
    status, ms = probe()
    now = rss()
    each = f", {(now - base) * 1024 / len(socks):.0f} B each" if socks else ""
    print(f"{name}: {len(socks)} connections, RSS {now} KiB (+{now - base} KiB{each}); "
          f"an ordinary request: {status} in {ms:.1f} ms")
def close(socks):
    for s in socks: s.close()
# 1. idle keep-alive connections after one request each
socks = []
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n")
    socks.append(s)
for s in socks:
    s.recv(4096)
phase("idle keep-alive", socks)
close(socks)
time.sleep(1)
# 2. connections that never send a byte, and ones stalled mid-head (slowloris)
socks = []
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    if i % 2:
        s.sendall(b"GET /x HTTP/1.1\r\nHost: h\r\nX-Slow: ")
    socks.append(s)
phase("silent and stalled heads", socks)
close(socks)
time.sleep(1)
# 3. bodies trickled: a declared 1 MB body with a few bytes sent
socks = []
for _ in range(n // 5):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 1000000\r\n\r\nabc")
    socks.append(s)
phase("trickled bodies", socks)
close(socks)
# 4. churn: connect and close
t = time.time()
for _ in range(n):
    socket.create_connection(("127.0.0.1", port)).close()
phase(f"after {n} connect/close in {time.time() - t:.1f} s", [])
time.sleep(6)
status, ms = probe()
print(f"after everything closed: RSS {rss()} KiB (start {base} KiB); an ordinary request: {status}")
PY
