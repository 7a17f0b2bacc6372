#!/usr/bin/env bash
# End to end with the real binaries: spotterd on free ports, the synthetic
# trainer (2 ranks) streaming to it, spotterctl and /metrics read back.
# Checks that the automatic controller moved the run through its phases, that
# the trainers applied the stop at its effective step, that spotterctl's
# commands work and that the metrics are served.
# Usage: demo_smoke.sh BUILD_DIR
set -euo pipefail
build=$1
tmp=$(mktemp -d)
# shellcheck source=../../scripts/lib/spotterd.sh
. "$(dirname "$0")/../../scripts/lib/spotterd.sh"
trap 'stop_spotterd || true; wait 2>/dev/null || true; rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

start_spotterd "$build/server/spotterd" "$tmp" || fail "spotterd did not start"
server=$spotterd_grpc
metrics=$spotterd_metrics
ctl() { "$build/client/cpp/spotterctl" --server "$server" "$@"; }

[ "$(ctl health)" = SERVING ] || fail "health is not SERVING"
"$build/examples/synthetic_trainer" --server "$server" --run smoke --step_ms 0.5 \
  --quiet > "$tmp/trainer.log" 2>&1 || { cat "$tmp/trainer.log"; fail "trainer failed"; }
cat "$tmp/trainer.log"
grep -q "stopped by directive" "$tmp/trainer.log" || fail "the trainers were never told to stop"

ctl show smoke > "$tmp/show.txt"
cat "$tmp/show.txt"
grep -q "acquisition -> refinement (automatic" "$tmp/show.txt" || fail "no automatic re-ask"
grep -q "refinement -> polish (automatic" "$tmp/show.txt" || fail "no automatic polish"
grep -q "polish -> done (automatic" "$tmp/show.txt" || fail "no automatic stop"
grep -q "evidence: .*rank_fraction=" "$tmp/show.txt" || fail "no evidence recorded"

# The stop took effect exactly at its effective step on both ranks: each rank
# reported steps up to effective_step - 1 and none beyond.
stop_step=$(sed -n 's/.*directive v[0-9]* from step \([0-9]*\): done.*/\1/p' "$tmp/show.txt")
[ -n "$stop_step" ] || fail "no stop directive in show"
for r in 0 1; do
  last=$(awk -v r=$r '$1 == r && NF == 7 {print $2}' "$tmp/show.txt")
  [ "$last" = "$((stop_step - 1))" ] || fail "rank $r last step $last, stop at $stop_step"
done

ctl runs > "$tmp/runs.txt"
grep -q "^smoke " "$tmp/runs.txt" || fail "runs does not list smoke"
ctl trajectory smoke --format csv > "$tmp/traj.csv"
head -1 "$tmp/traj.csv" | grep -q "^step,time_unix,phase,loss" || fail "bad csv header"
[ "$(wc -l < "$tmp/traj.csv")" -gt 100 ] || fail "short trajectory"
# (Outputs go to files first: grep -q closing a pipe early would fail it.)
ctl trajectory smoke --format json > "$tmp/traj.json"
grep -q '"points"' "$tmp/traj.json" || fail "bad json"
# calibrate reads the run back as controller observations: replayed with the
# run's own thresholds they must decide the switch at the very step the
# server's controller did (an exact reference for the read-back).
ctl --output json show smoke > "$tmp/show.json"
ctl --output json calibrate smoke > "$tmp/calibrate.json" || fail "calibrate failed"
ctl --output json calibrate smoke --spectrum second_moment > "$tmp/calibrate2.json" \
  || fail "calibrate --spectrum second_moment failed"
/usr/bin/python3 - "$tmp/show.json" "$tmp/calibrate.json" "$tmp/calibrate2.json" <<'PY' \
  || fail "calibrate does not replay the run's own switch"
import json, sys
show = json.load(open(sys.argv[1]))["run"]
cal, cal2 = json.load(open(sys.argv[2])), json.load(open(sys.argv[3]))
decided = [int(t["decision_step"]) for t in show["transitions"]
           if t.get("from_phase") == "PHASE_ACQUISITION" and t.get("to_phase") == "PHASE_REFINEMENT"
           and t.get("cause") == "CAUSE_AUTOMATIC"]
run = cal["runs"][0]
print("calibrate:", cal["proposed"], "own switch", run["own_switch_step"], "server", decided)
assert decided and run["own_switch_step"] == decided[0], (run, decided)
assert run["evaluations"] > 0 and 0 < cal["proposed"]["rank_fraction_max"] <= 1
assert cal2["spectrum"] == "second_moment" and cal2["runs"][0]["evaluations"] > 0
PY
rc=0; ctl calibrate > /dev/null 2>&1 || rc=$?
[ $rc = 64 ] || fail "calibrate without runs: exit $rc, want 64"
ctl override smoke --phase refinement --reason smoke > "$tmp/override.txt"
grep -q "issued directive v5" "$tmp/override.txt" || fail "override did not issue v5"
ctl override smoke --release > "$tmp/release.txt"
grep -q "released" "$tmp/release.txt" || fail "release"
ctl show nope > /dev/null 2>&1 && fail "show of an unknown run succeeded"

curl -sf "http://$metrics/metrics" > "$tmp/metrics.txt" || fail "no /metrics"
grep -q '^spotter_run_effective_rank{run="smoke"}' "$tmp/metrics.txt" || fail "no run gauge"
awk '$1 == "spotter_uploads_total" && $2 > 1000 {ok=1} END {exit !ok}' "$tmp/metrics.txt" \
  || fail "uploads not counted"
ctl finish smoke > "$tmp/finish.txt"
grep -q finished "$tmp/finish.txt" || fail "finish"
curl -sf "http://$metrics/metrics" > "$tmp/metrics2.txt"
grep -q 'run="smoke"' "$tmp/metrics2.txt" && fail "series kept after finish"

stop_spotterd || fail "spotterd exited with an error"
grep -q "stopped" "$tmp/spotterd.log" || fail "no clean shutdown"
echo "PASS"
