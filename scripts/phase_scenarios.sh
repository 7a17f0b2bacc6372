#!/usr/bin/env bash
# The known-answer phase scenarios in full (docs/PHASES.md, "Known-answer
# scenarios"): every scenario streamed to its end for SEEDS seeds, against the
# windows derived from the planted truth. Writes
#   docs/experiments/phase_scenarios.json  windows, derivations, every run's
#                                          transitions, the commit, the command
#   docs/experiments/phase_scenarios.md    the results table of docs/PHASES.md
#   BUILD/phase_scenarios.log              the test output (why a run failed)
# The short form (seed 1, three scenarios cut short) runs in ctest.
# Usage: scripts/phase_scenarios.sh [BUILD_DIR]
# Env: SEEDS (5), JOBS (2), SPOTTER_SCENARIOS_COMMIT (default: git rev-parse
# HEAD, "+dirty" when what decides has uncommitted changes).
# Exits 1 when a scenario fails; the results are written anyway.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
[ -f "$build/CMakeCache.txt" ] || cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j"${JOBS:-2}" --target phase_scenarios_test

commit=${SPOTTER_SCENARIOS_COMMIT:-}
if [ -z "$commit" ]; then
  commit=$(git rev-parse HEAD)
  # The controller, the server and the scenarios decide the results.
  if [ -n "$(git status --porcelain -- core server proto tests/scenarios \
      tests/integration/phase_scenarios_test.cc)" ]; then
    commit="$commit+dirty"
  fi
fi
out=docs/experiments
mkdir -p "$out"
start=$(date +%s)
status=0
SPOTTER_SCENARIOS=full SPOTTER_SCENARIOS_SEEDS="${SEEDS:-5}" \
  SPOTTER_SCENARIOS_COMMIT="$commit" \
  SPOTTER_SCENARIOS_COMMAND="SEEDS=${SEEDS:-5} scripts/phase_scenarios.sh $*" \
  SPOTTER_SCENARIOS_JSON="$out/phase_scenarios.json" SPOTTER_SCENARIOS_MD="$out/phase_scenarios.md" \
  "$build/tests/phase_scenarios_test" --gtest_filter='Scenarios/*' >"$build/phase_scenarios.log" 2>&1 ||
  status=$?
# The table names the commit and command that made it, like the JSON.
{ printf 'Commit %s: `SEEDS=%s scripts/phase_scenarios.sh %s`\n\n' "$commit" "${SEEDS:-5}" "$*"
  cat "$out/phase_scenarios.md"; } >"$out/phase_scenarios.md.tmp"
mv "$out/phase_scenarios.md.tmp" "$out/phase_scenarios.md"
cat "$out/phase_scenarios.md"
grep -E '^\[  (PASSED|FAILED) ' "$build/phase_scenarios.log" | grep -v ', where' || true
echo "phase scenarios: $(( $(date +%s) - start )) s at $commit; see $out/phase_scenarios.json"
exit $status
