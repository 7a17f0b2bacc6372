# shellcheck shell=bash
# shellcheck disable=SC2034  # spotterd_grpc and spotterd_metrics are for the caller
# Shell helpers for the scripts and tests that start a spotterd of their own
# or record which commit their results come from. Source it:
#   . "$(dirname "$0")/lib/spotterd.sh"        (from scripts/)
# It sets no shell options and starts nothing by itself.

# The commit results come from, for result files: the short hash of HEAD,
# with "-dirty" when tracked files differ from it; "unknown" outside git.
spotter_commit() {
  local commit
  commit=$(git rev-parse --short HEAD 2>/dev/null) || { echo unknown; return 0; }
  [ -z "$(git status --porcelain --untracked-files=no 2>/dev/null)" ] || commit=$commit-dirty
  echo "$commit"
}

# start_spotterd SPOTTERD DIR [FLAG...]
# Starts SPOTTERD on free loopback ports (gRPC and metrics) with FLAGs,
# logging to DIR/spotterd.log, and returns once it listens (it writes its
# ports to DIR/ports then). Sets spotterd_pid, spotterd_grpc and
# spotterd_metrics (host:port). Returns 1, with the log on stderr, when
# spotterd exits or does not listen within 30 s. The caller stops it
# (stop_spotterd, or its own trap).
start_spotterd() {
  local bin=$1 dir=$2
  shift 2
  rm -f "$dir/ports"
  "$bin" --listen 127.0.0.1:0 --metrics_listen 127.0.0.1:0 --port_file "$dir/ports" "$@" \
    2>"$dir/spotterd.log" &
  spotterd_pid=$!
  local _
  for _ in $(seq 300); do
    if [ -s "$dir/ports" ]; then
      spotterd_grpc=127.0.0.1:$(sed -n 's/^grpc=//p' "$dir/ports")
      spotterd_metrics=127.0.0.1:$(sed -n 's/^metrics=//p' "$dir/ports")
      return 0
    fi
    kill -0 "$spotterd_pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "spotterd did not start listening; its log ($dir/spotterd.log):" >&2
  cat "$dir/spotterd.log" >&2
  return 1
}

# Stops the spotterd of start_spotterd (SIGTERM, then waits); returns its
# exit status. Safe to call twice.
stop_spotterd() {
  [ -n "${spotterd_pid:-}" ] || return 0
  local pid=$spotterd_pid rc=0
  spotterd_pid=
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || rc=$?
  return $rc
}
