#!/usr/bin/env bash
# Load test (see the project's BENCH.md): requests/s through
#   upstream direct | NGINX reverse proxy | palisade, route without limits |
#   palisade, route with one Redis rate limit
# interleaved round by round, medians reported. wrk runs on CPU 0; proxies,
# upstream and Redis share CPU 1. Everything listens on 127.0.0.1 and is
# stopped by PID at the end.
#   usage: [REDIS_CPU=1] bench/run.sh [ROUNDS=5] [SECONDS=5] [CONNECTIONS=64]
# REDIS_CPU=0 moves Redis off the proxy's core (as in a deployment, where
# Redis runs elsewhere), to see palisade's own cost of a Redis limit.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-5}; SECS=${2:-5}; CONNS=${3:-64}; REDIS_CPU=${REDIS_CPU:-1}
for bin in wrk nginx redis-server taskset; do
  command -v "$bin" >/dev/null || { echo "missing $bin (apt-get install -y wrk nginx-light redis-server util-linux)"; exit 1; }
done
cargo build --release --quiet
work=$(mktemp -d); pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; sleep 0.3; rm -rf "$work"; }
trap cleanup EXIT
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
UP=$(port); NGX=$(port); PAL=$(port); ADM=$(port); RDS=$(port)

cat > "$work/nginx.conf" <<NGINX
worker_processes 1; daemon off; pid $work/nginx.pid; error_log $work/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  upstream app { server 127.0.0.1:$UP; keepalive 64; }
  server { listen 127.0.0.1:$UP; location / { return 200 '{"ok":true,"msg":"hello from the upstream, about a hundred bytes of JSON body"}'; } }
  server { listen 127.0.0.1:$NGX; location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; } }
}
NGINX
taskset -c 1 nginx -c "$work/nginx.conf" -e "$work/nginx-error.log" & pids+=($!)
taskset -c "$REDIS_CPU" redis-server --port "$RDS" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" >/dev/null & pids+=($!)
cat > "$work/policy.toml" <<TOML
[server]
listen = "127.0.0.1:$PAL"
workers = 1
[admin]
listen = "127.0.0.1:$ADM"
[log]
access_log = false
level = "warn"
[upstream]
url = "http://127.0.0.1:$UP"
[ratelimit]
backend = "redis"
redis_url = "redis://127.0.0.1:$RDS"
redis_timeout = "50ms"
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
taskset -c 1 ./target/release/palisade run --config "$work/policy.toml" >/dev/null & pids+=($!)
sleep 1

declare -A url=( [upstream]="http://127.0.0.1:$UP/free/x" [nginx]="http://127.0.0.1:$NGX/free/x"
                 [palisade]="http://127.0.0.1:$PAL/free/x" [palisade+redis]="http://127.0.0.1:$PAL/limited/x" )
order=(upstream nginx palisade palisade+redis)
rps() { taskset -c 0 wrk -t1 -c"$CONNS" -d"${SECS}s" "$1" | awk '/Requests\/sec/ {print $2}'; }
for t in "${order[@]}"; do rps "${url[$t]}" >/dev/null; done   # warm-up
declare -A results
for r in $(seq 1 "$ROUNDS"); do
  for t in "${order[@]}"; do v=$(rps "${url[$t]}"); results[$t]+="$v "; echo "round $r $t $v req/s" >&2; done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo; printf "%-16s %12s %10s %s\n" target "median rps" "vs nginx" "all rounds"
ngx=$(echo "${results[nginx]}" | median)
for t in "${order[@]}"; do
  m=$(echo "${results[$t]}" | median)
  printf "%-16s %12s %10s %s\n" "$t" "$m" "$(python3 -c "print(f'{$m/$ngx:.2f}')")" "${results[$t]}"
done
free=$(echo "${results[palisade]}" | median); lim=$(echo "${results[palisade+redis]}" | median)
python3 -c "print(f'\nOne Redis limit costs {100*(1-$lim/$free):.1f}% of palisade throughput at $CONNS connections (Redis on CPU $REDIS_CPU).')"
