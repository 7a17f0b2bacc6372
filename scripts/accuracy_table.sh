#!/usr/bin/env bash
# Regenerates the accuracy table of docs/DIAGNOSTICS.md: builds the core tool
# bench/accuracy_table.cc and runs it with the defaults the table was made
# with (planted spectra in P = 16384 dims, CountSketch, 300 steps x 32 rows,
# decay 0.99, 5 seeds, k in {256, 1024, 4096} x l in {32, 64, 128}).
# Extra arguments are passed to the tool (--help lists its flags), e.g.
#   scripts/accuracy_table.sh build-diag --projection=gaussian --ks=256
# Takes ~15 minutes of one core at the defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
shift || true
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release > /dev/null
cmake --build "$build" --target spotter_accuracy_table -j"${JOBS:-2}" > /dev/null
exec "$build/bench/spotter_accuracy_table" "$@"
