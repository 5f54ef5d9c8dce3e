#!/usr/bin/env bash
# Faults under load (issue 10). Four bounded scenarios against the release
# binary, each under wrk load on 127.0.0.1, each printing its figures:
#   1. Redis killed and restarted: no request waits past redis_timeout for
#      long; limits fall back to local, then resume on Redis.
#   2. The upstream killed and restarted: 502, then 503 while the breaker
#      is open; the breaker closes again; nothing stays stuck.
#   3. 20 reloads (SIGHUP): zero failed requests.
#   4. SIGTERM with requests in flight: every in-flight request finishes.
# Everything it starts is stopped by PID at the end.
#   usage: bench/faults.sh [SECONDS_PER_SCENARIO=12]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
need wrk nginx redis-server redis-cli curl python3
SECS=${1:-12}
cargo build --release --quiet
BIN=$PWD/target/release/palisade
UP=$(port); PAL=$(port); ADM=$(port); RDS=$(port)

# The upstream: NGINX answering a small JSON body.
cat > "$work/nginx.conf" <<NGINX
worker_processes 1; daemon off; pid $work/nginx.pid; error_log $work/nginx-error.log;
events { worker_connections 4096; }
http { access_log off;
  server { listen 127.0.0.1:$UP; location / { return 200 '{"ok":true}'; } } }
NGINX
start_upstream() { nginx -c "$work/nginx.conf" -e "$work/nginx-error.log" & upstream_pid=$!; pids+=("$upstream_pid"); }
start_redis() { redis-server --port "$RDS" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" >/dev/null & redis_pid=$!; pids+=("$redis_pid"); }

write_policy() {  # $1 = retry attempts
cat > "$work/policy.toml" <<TOML
[server]
listen = "127.0.0.1:$PAL"
workers = 1
shutdown_grace = "10s"
[admin]
listen = "127.0.0.1:$ADM"
[log]
access_log = false
level = "error"
[upstream]
url = "http://127.0.0.1:$UP"
connect_timeout = "200ms"
[upstream.retry]
attempts = ${1:-0}
[upstream.circuit_breaker]
min_requests = 20
window = "2s"
open_for = "1s"
[ratelimit]
backend = "redis"
redis_url = "redis://127.0.0.1:$RDS"
redis_timeout = "50ms"
on_redis_error = "local"
[defaults]
auth = "none"
[[routes]]
name = "limited"
path = "/limited/**"
rate_limits = [{ by = "ip", limit = 1000000000, per = "1s" }]
[[routes]]
name = "free"
path = "/**"
TOML
}
start_palisade() { "$BIN" run --config "$work/policy.toml" >"$work/palisade.log" 2>&1 & pal_pid=$!; pids+=("$pal_pid"); wait_port "$PAL"; wait_port "$ADM"; }
metric() { curl -s -m 5 "http://127.0.0.1:$ADM/metrics" | awk -v m="$1" 'index($0, m" ")==1 || index($0, m"{")==1 {s+=$NF} END {print s+0}'; }
series() { curl -s -m 5 "http://127.0.0.1:$ADM/metrics" | { grep -F "$1" || true; } | awk '{s+=$NF} END {print s+0}'; }
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
load() {  # $1 url, $2 seconds -> wrk report in $work/wrk.txt (in background)
  wrk -t1 -c32 -d"$2s" --latency "$1" > "$work/wrk.txt" 2>&1 & wrk_pid=$!; pids+=("$wrk_pid")
}
report() {  # summarise the last wrk run
  wait "$wrk_pid" || true
  local total non2xx errors max p99
  total=$(awk '/requests in/ {print $1}' "$work/wrk.txt")
  non2xx=$(awk '/Non-2xx/ {print $NF}' "$work/wrk.txt"); non2xx=${non2xx:-0}
  errors=$(awk -F'[ ,]+' '/Socket errors/ {print $4+$6+$8+$10}' "$work/wrk.txt"); errors=${errors:-0}
  max=$(awk '/Latency/ && !/Distribution/ {print $4; exit}' "$work/wrk.txt")
  p99=$(awk '$1=="99%" {print $2}' "$work/wrk.txt")
  echo "  requests $total, non-2xx $non2xx, socket errors $errors, latency p99 $p99, max $max"
}

start_upstream; start_redis; wait_port "$UP"; wait_port "$RDS"
write_policy 0; start_palisade
echo "palisade pid $pal_pid, RSS at start $(rss_kib "$pal_pid") KiB"

echo "1. Redis killed and restarted under load (${SECS}s; killed at 3s, back at $((SECS/2))s)"
before_err=$(metric palisade_ratelimit_backend_errors_total)
load "http://127.0.0.1:$PAL/limited/x" "$SECS"
sleep 3; kill "$redis_pid"; sleep $((SECS/2 - 3)); start_redis; wait_port "$RDS"
report
after_err=$(metric palisade_ratelimit_backend_errors_total)
echo "  redis backend errors counted: $((after_err - before_err)) (each one waited at most redis_timeout = 50ms)"
sleep 2
curl -s -m 5 -o /dev/null "http://127.0.0.1:$PAL/limited/x"
echo "  after the restart: readyz $(curl -s -m 5 "http://127.0.0.1:$ADM/readyz")"
err_then=$(metric palisade_ratelimit_backend_errors_total)
for _ in $(seq 50); do curl -s -m 5 -o /dev/null "http://127.0.0.1:$PAL/limited/x"; done
echo "  backend errors over 50 more requests: $(( $(metric palisade_ratelimit_backend_errors_total) - err_then )) (0 = limits back on Redis)"

echo "2. Upstream killed and restarted under load (${SECS}s; killed at 3s, back at $((SECS/2))s)"
load "http://127.0.0.1:$PAL/free/x" "$SECS"
sleep 3; kill "$upstream_pid"; sleep $((SECS/2 - 3)); start_upstream; wait_port "$UP"
report
echo "  responses: 200 $(series 'status="200"'), 502 $(series 'status="502"'), 503 $(series 'status="503"')"
sleep 2
for _ in $(seq 30); do curl -s -m 5 -o /dev/null -w "%{http_code} " "http://127.0.0.1:$PAL/free/x"; done; echo
echo "  circuit state after recovery: $(metric palisade_circuit_state) (0 = closed); last request: $(curl -s -m 5 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PAL/free/x")"

echo "3. 20 reloads (SIGHUP) under load (${SECS}s)"
before_ok=$(series 'palisade_config_reloads_total{result="success"}')
load "http://127.0.0.1:$PAL/free/x" "$SECS"
sleep 1; for _ in $(seq 20); do kill -HUP "$pal_pid"; sleep 0.25; done
report
echo "  SIGHUPs sent: 20; reloads done: $(( $(series 'palisade_config_reloads_total{result="success"}') - before_ok )) (a SIGHUP arriving during a reload coalesces with it); failed: $(series 'palisade_config_reloads_total{result="failure"}')"

echo "4. SIGTERM with 64 requests in flight (each held 1 s by a slow upstream)"
SLOW=$(port)
python3 - "$SLOW" > /dev/null 2>&1 <<'PY' & slow_pid=$!; pids+=("$slow_pid")
import sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        time.sleep(1)
        self.send_response(200); self.send_header("content-length", "2"); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *a): pass
class S(ThreadingHTTPServer):
    request_queue_size = 256
S(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
wait_port "$SLOW"
sed -i "s|^url = .*|url = \"http://127.0.0.1:$SLOW\"|" "$work/policy.toml"
kill -HUP "$pal_pid"; sleep 1
echo "  RSS before SIGTERM: $(rss_kib "$pal_pid") KiB"
python3 - "$PAL" "$pal_pid" <<'PY'
import sys, os, signal, threading, time, http.client
port, pid = int(sys.argv[1]), int(sys.argv[2])
results = []
def one():
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
        c.request("GET", "/free/slow"); r = c.getresponse(); r.read(); results.append(r.status)
    except Exception as e:
        results.append(type(e).__name__)
threads = [threading.Thread(target=one) for _ in range(64)]
for t in threads: t.start()
time.sleep(0.4)
os.kill(pid, signal.SIGTERM)
for t in threads: t.join()
ok = sum(1 for r in results if r == 200)
print(f"  in flight at SIGTERM: 64; finished with 200: {ok}; cut: {64 - ok} {sorted(set(map(str, results)))}")
PY
wait "$pal_pid" && echo "  palisade exited with 0" || echo "  palisade exited with $?"
