#!/usr/bin/env bash
# The demo of `make demo`: spotterd on its embedded defaults, the synthetic
# trainer (2 ranks) streaming to it, the trajectory printed as it grows, then
# the run's phase history and a few of its metrics, and a clean shutdown.
set -euo pipefail
build=${1:-build}
spotterd=$build/server/spotterd
spotterctl=$build/client/cpp/spotterctl
trainer=$build/examples/synthetic_trainer
tmp=$(mktemp -d)
trap 'kill -TERM "${pid:-}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$tmp"' EXIT

# The embedded defaults (gRPC 127.0.0.1:50051, metrics 127.0.0.1:9464); when
# something else holds those ports, free ones instead.
"$spotterd" --port_file "$tmp/ports" 2>"$tmp/spotterd.log" &
pid=$!
for _ in $(seq 100); do [ -s "$tmp/ports" ] || ! kill -0 $pid 2>/dev/null && break; sleep 0.1; done
if [ ! -s "$tmp/ports" ]; then
  echo "demo: the default ports are busy ($(cat "$tmp/spotterd.log")); using free ones"
  wait $pid 2>/dev/null || true
  "$spotterd" --listen 127.0.0.1:0 --metrics_listen 127.0.0.1:0 --port_file "$tmp/ports" \
    2>"$tmp/spotterd.log" &
  pid=$!
  for _ in $(seq 100); do [ -s "$tmp/ports" ] && break; sleep 0.1; done
fi
grpc=$(sed -n 's/^grpc=//p' "$tmp/ports")
metrics=$(sed -n 's/^metrics=//p' "$tmp/ports")
server=127.0.0.1:$grpc
until "$spotterctl" --server "$server" health >/dev/null 2>&1; do sleep 0.1; done

cat <<MSG
spotterd is up: gRPC $server, metrics http://127.0.0.1:$metrics/metrics
While the demo runs, in another terminal:
  $spotterctl --server $server watch demo
  curl -s http://127.0.0.1:$metrics/metrics | grep spotter_run_

The trainer: 2 ranks, 3000 planned steps of a synthetic model whose gradient
spectrum collapses onto a few directions; rank 0 prints the trajectory.
MSG
"$trainer" --server "$server" --run demo
echo
echo "== spotterctl show demo"
"$spotterctl" --server "$server" show demo
echo
echo "== a few of its metrics (http://127.0.0.1:$metrics/metrics)"
curl -s "http://127.0.0.1:$metrics/metrics" | grep -E '^spotter_run_(effective_rank|participation_ratio|learning_rate|phase)\{' | grep 'run="demo"' || true
echo
echo "== shutting down spotterd"
kill -TERM $pid
wait $pid
cat "$tmp/spotterd.log"
