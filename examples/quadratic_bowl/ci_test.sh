#!/usr/bin/env bash
# The quadratic bowl in CI (ctest quadratic_bowl_ci, label experiment): a real
# spotterd on free ports, three seeds per arm at fixed learning rates, and
# --check: every three-phase run must pass through acquisition, refinement
# and polish on the controller's own triggers, hold every directive before
# its effective step, switch exactly at it, and reach the target.
# Usage: ci_test.sh SPOTTERD QUADRATIC_BOWL OUT_DIR
set -euo pipefail
spotterd=$1
bowl=$2
out=$3
rm -rf "$out"
mkdir -p "$out"
"$spotterd" --listen 127.0.0.1:0 --metrics_listen 127.0.0.1:0 --port_file "$out/ports" \
  2>"$out/spotterd.log" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null || true; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 300); do
  [ -s "$out/ports" ] && break
  kill -0 $pid 2>/dev/null || { cat "$out/spotterd.log"; exit 1; }
  sleep 0.1
done
grpc=$(sed -n 's/^grpc=//p' "$out/ports")
# A generous delivery budget: CI machines are loaded, and this checks the
# closed loop, not how small the margin can be.
"$bowl" --server "127.0.0.1:$grpc" --seeds 3 --parallel 1 --out "$out" --check \
  --delivery_budget 1.0 \
  --lr constant=0.1,two_step=0.3,natural_gradient=0.005,three_phase=0.01
