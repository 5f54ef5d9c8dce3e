#!/usr/bin/env bash
# The profile-guided build of palisade (PGO), the build the container
# image ships and `bench/run.sh` measures: the compiler is told which
# branches and calls the proxy takes under load, and lays out and inlines
# the hot path for them. No code changes; the test suite runs on the
# ordinary build. The profile is committed (pgo/palisade.profdata), so a
# PGO build is one `cargo build` with -Cprofile-use, as in the Dockerfile.
#
#   bench/pgo.sh          builds target/pgo/release/palisade with the
#                         committed profile (prints the binary's path last)
#   bench/pgo.sh train    makes the profile again from this checkout, then
#                         builds; run it after changing the request path
#
# Training (`train`):
# 1. An instrumented build (-Cprofile-generate) in target/pgo-generate.
# 2. That binary serves each of the bench's palisade policies (plain, full,
#    Redis limit, tracing, and plain on hyper's engines) in front of the
#    bench's NGINX upstream, under wrk (GET, then the 1 KiB POST with a
#    16 KiB answer) and curl over HTTP/2 cleartext, for PGO_SECONDS each;
#    SIGTERM then stops it, and it writes its counts as it exits.
# 3. llvm-profdata (rustup's llvm-tools component, added when missing)
#    merges the counts into pgo/palisade.profdata, sparse: only functions
#    the training ran have counts, so code it never ran (TLS, errors,
#    WebSocket) is optimised as in the ordinary build, not as cold code.
#
#   PGO_SECONDS=4    seconds of load per policy and workload
#
# A profile older than the code still builds: a function changed since it
# was made loses its counts and is compiled as in the ordinary build. The
# profile names functions by their symbols, which cargo derives from the
# release profile's settings among other things: it applies to a
# `cargo build --release` in any directory (checked: a clone elsewhere
# builds to the same instruction count), but a change to
# [profile.release] (debug info, LTO) or to the dependencies needs
# `bench/pgo.sh train` (a build with debug info turned on matched nothing).
# Talks only to 127.0.0.1; stops what it started by PID. `train` takes
# about 10 minutes on 2 cores, most of it the two builds.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PROFILE=$ROOT/pgo/palisade.profdata

# Makes pgo/palisade.profdata from an instrumented build under load.
train() {
  source bench/lib.sh
  source bench/targets.sh
  ensure_tools
  local seconds=${PGO_SECONDS:-4} RAW=$ROOT/target/pgo-generate/profiles
  local profdata t url
  profdata=$(ls "$(rustc --print sysroot)"/lib/rustlib/*/bin/llvm-profdata 2>/dev/null | head -n 1 || true)
  if [ -z "$profdata" ]; then
    echo "installing llvm-tools (rustup component add llvm-tools)" >&2
    rustup component add llvm-tools >&2
    profdata=$(ls "$(rustc --print sysroot)"/lib/rustlib/*/bin/llvm-profdata | head -n 1)
  fi

  echo "pgo 1/4: instrumented build (target/pgo-generate)" >&2
  RUSTFLAGS="-Cprofile-generate=$RAW" CARGO_TARGET_DIR=$ROOT/target/pgo-generate \
    cargo build --release --locked --quiet --bin palisade
  # The build's own instrumented build scripts and proc macros wrote counts
  # here as they ran: only palisade's are wanted.
  rm -rf "$RAW"; mkdir -p "$RAW"
  BIN=$ROOT/target/pgo-generate/release/palisade

  echo "pgo 2/4: training, ${seconds}s per policy and workload" >&2
  start_upstream 1
  mint_token
  write_post_script
  hdr=(-H "Authorization: Bearer $TOKEN" -H "Origin: $ORIGIN")
  for t in palisade-plain palisade-full palisade-redis palisade-trace palisade-plain-hyper; do
    start_target "$t" 1 || { echo "pgo: $t did not start" >&2; exit 1; }
    url=http://127.0.0.1:$T_PORT
    wrk -t1 -c64 -d"${seconds}s" "${hdr[@]}" "$url/hello" | awk -v t="$t" '/^Requests\/sec/ {print "  " t " GET " $2 " req/s"}' >&2
    wrk -t1 -c64 -d"${seconds}s" "${hdr[@]}" -s "$work/post16k.lua" "$url/big/x" |
      awk -v t="$t" '/^Requests\/sec/ {print "  " t " POST " $2 " req/s"}' >&2
    # HTTP/2 cleartext: one connection, requests one after another.
    curl -s --http2-prior-knowledge "${hdr[@]}" -o /dev/null "$url/hello?n=[1-2000]" || true
    kill -TERM "$T_PID"
    wait "$T_PID" 2>/dev/null || true
  done
  ls "$RAW"/*.profraw >/dev/null 2>&1 || { echo "pgo: the training wrote no profile" >&2; exit 1; }

  echo "pgo 3/4: merging $(ls "$RAW"/*.profraw | wc -l) profiles into $PROFILE" >&2
  mkdir -p "$(dirname "$PROFILE")"
  "$profdata" merge --sparse -o "$PROFILE" "$RAW"/*.profraw
  train_step=" 4/4"
}

case ${1:-build} in
  build) ;;
  train) train ;;
  *) echo "usage: bench/pgo.sh [build|train]" >&2; exit 2 ;;
esac
[ -f "$PROFILE" ] || { echo "no profile at $PROFILE: run bench/pgo.sh train" >&2; exit 1; }
echo "pgo${train_step:-}: optimised build with $PROFILE (target/pgo)" >&2
RUSTFLAGS="-Cprofile-use=$PROFILE" CARGO_TARGET_DIR=$ROOT/target/pgo \
  cargo build --release --locked --quiet --bin palisade
echo "$ROOT/target/pgo/release/palisade"
