# Shared by the bench scripts (sourced, not run): tool checks, free ports,
# waiting for a listener, and stopping every started process by PID.
#   need TOOL...           exit with an install hint when one is missing
#   port                   a free loopback port
#   wait_port PORT         wait (5 s at most) until 127.0.0.1:PORT accepts
#   pids+=($!)             register a background process; all are stopped,
#                          and $work removed, when the script exits
need() {
  for bin in "$@"; do
    command -v "$bin" >/dev/null || { echo "missing $bin (apt-get install -y wrk nginx-light redis-server redis-tools curl)"; exit 1; }
  done
}
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened"; exit 1; }
work=$(mktemp -d); pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; sleep 0.3; rm -rf "$work"; }
trap cleanup EXIT
