#!/usr/bin/env bash
# The quadratic bowl in CI (ctest quadratic_bowl_ci, label experiment): a real
# spotterd on free ports, three seeds per arm at fixed learning rates (the
# full run's tuned ones), and --check: every run of both three-phase arms
# must pass through acquisition, refinement and polish on the controller's
# own triggers (a rolled-back switch included), hold every directive before
# its effective step, switch exactly at it and restore its snapshot at every
# rollback; every three_phase run (the exact Fisher) must reach the target.
# Usage: ci_test.sh SPOTTERD QUADRATIC_BOWL OUT_DIR
set -euo pipefail
# shellcheck source=../../scripts/lib/spotterd.sh
. "$(dirname "$0")/../../scripts/lib/spotterd.sh"
spotterd=$1
bowl=$2
out=$3
rm -rf "$out"
mkdir -p "$out"
trap stop_spotterd EXIT
start_spotterd "$spotterd" "$out"
# A generous delivery budget: CI machines are loaded, and this checks the
# closed loop, not how small the margin can be.
# Two runs at once: the three-phase runs spend their time in their 4 ms pacing,
# so the two three-phase arms take about as long as one did alone.
"$bowl" --server "$spotterd_grpc" --seeds 3 --parallel 2 --out "$out" --check \
  --delivery_budget 1.0 \
  --lr constant=0.1,two_step=0.3,natural_gradient=0.005,ng_estimated=0.001,three_phase=0.01,three_phase_estimated=0.3
