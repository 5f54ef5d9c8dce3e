#!/usr/bin/env bash
# Memory per idle keep-alive connection (issue 12): for each target, its
# idle RSS after start-up, then the RSS while N keep-alive connections are
# open and idle after one request each (bench/idle_conns.py), and the growth
# divided by N. Targets run one after another in front of the same upstream
# (see bench/targets.sh); RSS and its high-water mark come from
# /proc/PID/status. Everything listens on 127.0.0.1; all is stopped by PID.
#   usage: bench/memory.sh [N=10000]     (or: bench/run.sh memory [N])
#   knobs: MEM_TARGETS="nginx haproxy palisade-plain palisade-full"
#          LOAD_CPU=0 PROXY_CPU=1 SETTLE=2 (seconds before each reading)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-${N:-10000}}
MEM_TARGETS=${MEM_TARGETS:-nginx haproxy palisade-plain palisade-full}
LOAD_CPU=${LOAD_CPU:-0}; PROXY_CPU=${PROXY_CPU:-1}; SETTLE=${SETTLE:-2}
source bench/lib.sh
source bench/targets.sh
ensure_tools
# Every process started from here inherits the raised limit.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
max=$(( $(ulimit -n) - 500 ))
if [ "$N" -gt "$max" ]; then echo "open files limited to $(ulimit -n): N lowered from $N to $max" >&2; N=$max; fi
build_palisade
start_upstream "$PROXY_CPU"
mint_token

kib() { awk -v k="$2" '$1 == k":" {print $2}' "/proc/$1/status"; }
rows=()
for t in $MEM_TARGETS; do
  if ! start_target "$t" "$PROXY_CPU"; then echo "skip $t: not available (reason above)" >&2; continue; fi
  sleep "$SETTLE"
  idle=$(kib "$T_PID" VmRSS)
  taskset -c "$LOAD_CPU" python3 bench/idle_conns.py "$T_PORT" "$N" 600 \
    "Authorization: Bearer $TOKEN" "Origin: $ORIGIN" > "$work/client-$t.out" 2>&1 & client=$!; pids+=("$client")
  for _ in $(seq 1200); do [ -s "$work/client-$t.out" ] && break; sleep 0.1; done
  opened=$(awk '$1 == "open" {print $2}' "$work/client-$t.out")
  grep -q failed "$work/client-$t.out" && { echo "$t: $(cat "$work/client-$t.out")" >&2; }
  sleep "$SETTLE"
  full=$(kib "$T_PID" VmRSS); hwm=$(kib "$T_PID" VmHWM)
  kill "$client" 2>/dev/null || true; wait "$client" 2>/dev/null || true
  sleep "$SETTLE"
  after=$(kib "$T_PID" VmRSS)
  kill "$T_PID" 2>/dev/null || true; wait "$T_PID" 2>/dev/null || true
  echo "$t: idle ${idle} KiB, ${opened:-0} connections ${full} KiB (peak ${hwm} KiB), after they closed ${after} KiB" >&2
  rows+=("$t ${idle} ${full} ${hwm} ${after} ${opened:-0}")
done

echo
echo "Idle keep-alive connections, one request each, then idle; $N asked for; RSS from /proc/PID/status"
printf '%s\n' "${rows[@]}" | python3 -c '
import sys
asked, nofile = int(sys.argv[1]), sys.argv[2]
short = []
print("\n| target | idle RSS MiB | RSS with N conns MiB | connections | bytes per connection | KiB per connection | RSS after close MiB |")
print("|---|---|---|---|---|---|---|")
for line in sys.stdin:
    t, idle, full, hwm, after, n = line.split()
    idle, full, after, n = int(idle), int(full), int(after), int(n)
    per = (full - idle) * 1024 / n if n else float("nan")
    if n < asked:
        short.append(f"{t} held {n} of {asked}")
    print(f"| {t} | {idle/1024:.1f} | {full/1024:.1f} | {n} | {per:.0f} | {per/1024:.1f} | {after/1024:.1f} |")
if short:
    held = "; ".join(short)
    print(f"\n{held} (open files are limited to {nofile} here; HAProxy wants two per connection)")
print("\ntargets (issue 12): palisade <= 20 KiB per idle keep-alive connection, idle RSS <= 20 MiB")
' "$N" "$(ulimit -n)"
