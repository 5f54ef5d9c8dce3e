#!/usr/bin/env bash
# Instructions per request under callgrind: a before/after figure that does
# not move with the machine's load (wall-clock figures on a shared 2-core
# machine do). Each BINARY serves the plain policy (one catch-all route,
# headers off) in front of NGINX; after a warm-up the counters are zeroed,
# wrk sends requests for DURATION seconds, and the instructions palisade
# executed are divided by the requests wrk completed. Each request is the
# one bench/run.sh sends: a bearer token and an Origin (since session 27;
# earlier figures had no Origin, so full's CORS headers were not counted).
#
#   bench/instructions.sh [BINARY...]     default: target/release/palisade
#                     a BINARY named hyper_ceiling or tokio_floor (examples/)
#                     is run as the no-policy reference
#   DURATION=5 CONNECTIONS=8 POLICY=plain|full|redis|plain-hyper|full-hyper (-hyper: both
#                     http1_engine = "hyper"; plain and full run the default, palisade's own;
#                     redis: plain plus a Redis limit, on a redis-server started here)
#   PROFILE_DIR=dir   keep each run's callgrind file there (read it with
#                     callgrind_annotate; build with --profile profiling for symbols)
#
# Talks only to 127.0.0.1; stops what it started by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
source bench/targets.sh
need valgrind callgrind_control wrk nginx curl redis-server
DURATION=${DURATION:-5}
CONNECTIONS=${CONNECTIONS:-8}
POLICY=${POLICY:-plain}
bins=("$@")
[ ${#bins[@]} -gt 0 ] || bins=("$PWD/target/release/palisade")
start_upstream 0
JWT_SECRET=bench-secret-for-instruction-counts-0123456789
printf '| binary | policy | requests | instructions per request |\n|---|---|---|---|\n'
for bin in "${bins[@]}"; do
  BIN=$bin
  name=palisade-$POLICY
  T_PORT=$(port)
  base=${POLICY%-hyper}; base=${base%-h1}
  if [ "$base" = full ]; then
    palisade_config palisade-full "$(port)" "$(port)" > "$work/token.toml"
    TOKEN=$(BENCH_JWT_SECRET=$JWT_SECRET "$BIN" --config "$work/token.toml" token \
      --sub bench --ttl 1h --secret-env BENCH_JWT_SECRET 2>/dev/null || true)
  fi
  rds=""
  if [ "$base" = redis ]; then
    # The Redis limit: a redis-server of its own (its instructions are
    # not counted, only palisade's).
    rds=$(port)
    redis-server --port "$rds" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" \
      >"$work/redis.log" 2>&1 & pids+=($!)
    wait_port "$rds"
  fi
  palisade_config "$name" "$T_PORT" "$(port)" "$rds" > "$work/$name.toml"
  out=$work/callgrind.$$.out
  args=(run --config "$work/$name.toml")
  # examples/hyper_ceiling.rs and tokio_floor.rs take their two addresses
  # instead of a policy.
  case $(basename "$BIN") in
    hyper_ceiling|tokio_floor) args=("127.0.0.1:$T_PORT" "127.0.0.1:$UP") ;;
  esac
  BENCH_JWT_SECRET=$JWT_SECRET valgrind --tool=callgrind --callgrind-out-file="$out" \
    "$BIN" "${args[@]}" >"$work/vg.log" 2>&1 & vg=$!; pids+=("$vg")
  for _ in $(seq 600); do curl -s -o /dev/null "http://127.0.0.1:$T_PORT/" && break; sleep 0.1; done
  wrk -t1 -c"$CONNECTIONS" -d2s -H "Authorization: Bearer ${TOKEN:-x}" -H "Origin: $ORIGIN" "http://127.0.0.1:$T_PORT/" >/dev/null
  callgrind_control -z "$vg" >/dev/null
  requests=$(wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" -H "Authorization: Bearer ${TOKEN:-x}" -H "Origin: $ORIGIN" \
    "http://127.0.0.1:$T_PORT/" | awk '/requests in/ {print $1}')
  callgrind_control -d "$vg" >/dev/null
  sleep 1
  total=$(cat "$out"* 2>/dev/null | awk '/^summary:/ {s+=$2} /^totals:/ {t+=$2} END {print (s>0?s:t)}')
  [ -n "${KEEP_LOG:-}" ] && cp "$work/vg.log" "$KEEP_LOG"
  kill "$vg" 2>/dev/null || true; wait "$vg" 2>/dev/null || true
  if [ -n "${PROFILE_DIR:-}" ]; then
    mkdir -p "$PROFILE_DIR"
    for f in "$out"*; do cp "$f" "$PROFILE_DIR/callgrind.$POLICY.$(basename "$bin").$(basename "$f")"; done
  fi
  rm -f "$out"*
  printf '| %s | %s | %s | %s |\n' "$bin" "$POLICY" "$requests" "$(( total / requests ))"
done
