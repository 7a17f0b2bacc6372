#!/usr/bin/env bash
# The coverage table of docs/DIAGNOSTICS.md ("Sampling intervals"): how often
# the 90% sampling confidence interval (and the sketch bound) holds the
# population value, over SEEDS seeds per planted case. Writes
#   docs/diagnostics/coverage.json   every case's figures, the commit, the command
# and prints the Markdown table.
# Usage: scripts/coverage_table.sh [BUILD_DIR]
# Env: SEEDS (100), LOG2_P (12), K (256), STEPS (150), JOBS (2).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
[ -f "$build/CMakeCache.txt" ] || cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j"${JOBS:-2}" --target spotter_coverage_table >/dev/null
commit=$(git rev-parse HEAD)
if [ -n "$(git status --porcelain -- core tests/testing bench/coverage_table.cc)" ]; then
  commit="$commit+dirty"
fi
args=(--seeds "${SEEDS:-100}" --log2_p "${LOG2_P:-12}" --k "${K:-256}" --steps "${STEPS:-150}")
mkdir -p docs/diagnostics
"$build/bench/spotter_coverage_table" "${args[@]}" --commit "$commit" \
  --command "scripts/coverage_table.sh (spotter_coverage_table ${args[*]})" \
  --out docs/diagnostics/coverage.json
