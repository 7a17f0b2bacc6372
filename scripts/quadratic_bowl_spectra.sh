#!/usr/bin/env bash
# Which spectrum should the ACQUISITION trigger read on the quadratic bowl?
# Runs the bowl's three_phase arm (seeds 1..N, the LR scripts/quadratic_bowl.sh
# tuned, from docs/experiments/quadratic_bowl/summary.json) against a fresh
# spotterd and calls `spotterctl calibrate` on those runs twice: once on the
# centred gradient covariance (what the triggers read) and once on the
# uncentred second moment (the empirical Fisher). Writes
#   docs/experiments/quadratic_bowl/calibration_covariance.json
#   docs/experiments/quadratic_bowl/calibration_second_moment.json
# (spotterctl's JSON plus "commit", "command" and "spotterctl_command").
# docs/PHASES.md ("Which spectrum the triggers read") reads them.
# Usage: scripts/quadratic_bowl_spectra.sh [BUILD_DIR] [SEEDS]   (~1 min)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/spotterd.sh
command="scripts/quadratic_bowl_spectra.sh${*:+ $*}"
commit=$(spotter_commit)
build=${1:-build}
seeds=${2:-10}
docs=docs/experiments/quadratic_bowl
lr=$(/usr/bin/python3 -c '
import json, sys
arms = json.load(open(sys.argv[1]))["arms"]
print(next(a["lr"] for a in arms if a["arm"] == "three_phase"))' "$docs/summary.json")
cmake --build "$build" -j"${JOBS:-2}" --target spotterd spotterctl quadratic_bowl >/dev/null

tmp=$(mktemp -d)
trap 'stop_spotterd || true; rm -rf "$tmp"' EXIT
start_spotterd "$build/server/spotterd" "$tmp"
server=$spotterd_grpc

"$build/examples/quadratic_bowl/quadratic_bowl" --server "$server" --out "$tmp/out" \
  --arms three_phase --lr "three_phase=$lr" --seeds "$seeds" --run_prefix spectra \
  --commit "$commit" >"$tmp/bowl.log"
runs=$("$build/client/cpp/spotterctl" --server "$server" runs | awk '$1 ~ /^spectra-/ {print $1}')
for spectrum in covariance second_moment; do
  # shellcheck disable=SC2086  # one argument per run
  "$build/client/cpp/spotterctl" --server "$server" --output json calibrate $runs \
    --spectrum "$spectrum" >"$tmp/cal.json"
  /usr/bin/python3 - "$tmp/cal.json" "$docs/calibration_$spectrum.json" "$commit" "$command" \
    "spotterctl --output json calibrate <the $seeds three_phase runs> --spectrum $spectrum (three_phase LR $lr)" <<'PY'
import json, sys
src, dst, commit, command, ctl = sys.argv[1:]
cal = json.load(open(src))
cal.update(commit=commit, command=command, spotterctl_command=ctl)
with open(dst, "w") as f:
    json.dump(cal, f, indent=1)
    f.write("\n")
print(f"{cal['spectrum']}: proposed {cal['proposed']}, "
      f"{cal['runs_switched']} of {len(cal['runs'])} runs switch on them")
PY
done
