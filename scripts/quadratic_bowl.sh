#!/usr/bin/env bash
# Regenerates the quadratic-bowl table and plots of docs/EXPERIMENTS.md
# ("Quadratic bowl"): builds spotterd and the experiment, starts spotterd on
# free ports, tunes and runs the six arms (10 seeds each; the two three-phase
# arms over gRPC) and an ablation of the three-phase warm-up, and writes
#   docs/experiments/quadratic_bowl/summary.md         the tables, after a line
#                                                      naming the commit
#   docs/experiments/quadratic_bowl/summary.json       the same numbers: "commit"
#                                                      (short hash, "-dirty" if
#                                                      tracked files changed),
#                                                      "command", "arms" (one
#                                                      object per table row),
#                                                      "ablation" (its own)
#   docs/experiments/quadratic_bowl/{loss,rank_pr,steps}.png
#   docs/experiments/quadratic_bowl/show_seed1.txt      spotterctl show of seed 1's
#   docs/experiments/quadratic_bowl/show_estimated_seed1.txt  three-phase runs
#   BUILD/quadratic_bowl_out/*.csv                     every run, point, transition
# Usage: scripts/quadratic_bowl.sh [BUILD_DIR] [extra quadratic_bowl flags...]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/spotterd.sh
command="scripts/quadratic_bowl.sh${*:+ $*}"
# The commit the results come from, read before anything is written.
commit=$(spotter_commit)
build=${1:-build}
shift || true
data=$build/quadratic_bowl_out
docs=docs/experiments/quadratic_bowl
[ -f "$build/CMakeCache.txt" ] || cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j"${JOBS:-2}" --target spotterd spotterctl quadratic_bowl

tmp=$(mktemp -d)
trap 'stop_spotterd || true; rm -rf "$tmp"' EXIT
start_spotterd "$build/server/spotterd" "$tmp"
server=$spotterd_grpc

start=$(date +%s)
"$build/examples/quadratic_bowl/quadratic_bowl" --server "$server" --out "$data" \
  --run_prefix bowl --commit "$commit" "$@"
# Ablation: the three-phase arm with a third of the warm-up (re-tuned).
"$build/examples/quadratic_bowl/quadratic_bowl" --server "$server" \
  --out "$data/warmup_0.05" --run_prefix bowl-w005 --arms three_phase \
  --three_phase_warmup 0.05 --commit "$commit" "$@"
/usr/bin/python3 examples/quadratic_bowl/plot.py "$data" "$docs"
{
  echo "Commit $commit: \`$command\`"
  echo
  cat "$data/summary.md"
  echo
  echo "Ablation, three-phase arm with warmup_fraction 0.05:"
  echo
  cat "$data/warmup_0.05/summary.md"
} > "$docs/summary.md"
/usr/bin/python3 - "$data/summary.json" "$data/warmup_0.05/summary.json" "$command" \
  "$docs/summary.json" <<'PY'
import json, sys
main, ablation, command, out = sys.argv[1:]
with open(main) as f:
    result = json.load(f)
with open(ablation) as f:
    result["ablation"] = json.load(f)
result["quadratic_bowl_command"] = result["command"]
result["command"] = command
with open(out, "w") as f:
    json.dump(result, f, indent=2)
    f.write("\n")
PY
# The phase history of seed 1's three-phase runs, as an operator sees them:
# the oracle preconditioner and the estimated one (which rolls back).
show() {  # show RUN_PATTERN FILE
  local run
  run=$("$build/client/cpp/spotterctl" --server "$server" runs |
    awk -v pat="$1" '$1 ~ pat && !found {print $1; found = 1}')
  [ -n "$run" ] || return 0
  {
    echo "Commit $commit: \`$command\` (spotterctl show $run)"
    echo
    "$build/client/cpp/spotterctl" --server "$server" show "$run"
  } > "$2"
}
show '^bowl-3ph-.*-s1$' "$docs/show_seed1.txt"
show '^bowl-3phk-.*-s1$' "$docs/show_estimated_seed1.txt"
echo "quadratic bowl: $(( $(date +%s) - start )) s (experiment and plots); see $docs/"
