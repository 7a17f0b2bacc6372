#!/usr/bin/env bash
# examples/torch_transformer.py end to end, tiny (ctest torch_transformer_short,
# label experiment): its own spotterd, two tuning seeds, calibration through
# spotterctl, two reported seeds of constant (ADVISE Monitor) and three_phase
# (CONTROL), two runs at a time (--jobs 2), results and plots. Checks that the
# files are written, that the calibration proposes thresholds, and that
# results.json carries the commit, the command and the confidence intervals.
# It checks the pipeline, not the numbers: 64 steps train nothing worth comparing.
# Usage: torch_transformer_ci.sh PYTHON SPOTTERD SPOTTERCTL PYTHONPATH OUT_DIR
set -euo pipefail
py=$1
spotterd=$2
spotterctl=$3
site=$4
out=$5
here=$(cd "$(dirname "$0")" && pwd)
rm -rf "$out"
mkdir -p "$out"
"$py" "$here/torch_transformer_stats.py"  # the t table against its integral
# Server evaluations every 3 steps (sketches every step) give the 64-step runs
# 21 evaluations, 18 after the 15% warm-up, so calibrate has windows to read.
PYTHONPATH=$site OMP_NUM_THREADS=1 "$py" "$here/torch_transformer.py" \
  --spotterd "$spotterd" --spotterctl "$spotterctl" --steps 64 --seeds 0 1 \
  --tuning_seeds 100 101 --methods constant three_phase --jobs 2 \
  --sketch_every 1 --spotter_eval_every 3 --eval_every 16 --val_size 500 --test_size 2000 --out "$out" \
  >"$out/stdout.txt"
"$py" - "$out" <<'PY'
import json, math, os, sys
out = sys.argv[1]
for f in ["calibration.json", "calibration_second_moment.json", "results.json", "accuracy.png",
          "trajectory_constant.png", "trajectory_three_phase.png"] + \
         [f"runs/{m}-s{s}.json" for m in ("constant", "three_phase") for s in (0, 1)] + \
         [f"runs/tuning-constant-s{s}.json" for s in (100, 101)]:
    assert os.path.getsize(os.path.join(out, f)) > 0, f
for name, spectrum in (("calibration.json", "covariance"),
                       ("calibration_second_moment.json", "second_moment")):
    cal = json.load(open(os.path.join(out, name)))
    assert cal["spectrum"] == spectrum, (name, cal["spectrum"])
    assert "calibrate" in cal["spotterctl_command"], cal
    assert len(cal["runs"]) == 2, cal["runs"]
    for k in ("rank_fraction_max", "plateau_epsilon", "id_drop_threshold"):
        v = cal["proposed"][k]
        assert isinstance(v, (int, float)) and math.isfinite(v) and v > 0, (name, k, v)
res = json.load(open(os.path.join(out, "results.json")))
assert isinstance(res["commit"], str) and res["commit"], res  # "unknown" outside git
assert "--tuning_seeds" in res["command"], res["command"]
# Every result file names the commit that made it (all made by this one run).
assert res["run_commits"] == [res["commit"]], res["run_commits"]
for f in ["calibration.json", "calibration_second_moment.json"] + \
         [os.path.join("runs", f) for f in os.listdir(os.path.join(out, "runs"))]:
    assert json.load(open(os.path.join(out, f)))["commit"] == res["commit"], f
cal = json.load(open(os.path.join(out, "calibration.json")))
for k, v in cal["proposed"].items():
    assert res["phase_config"][k] == v, (k, res["phase_config"][k], v)
for m in ("constant", "three_phase"):
    t = res["methods"][m]
    lo, hi = t["test_accuracy_stats"]["ci95"]
    assert lo <= t["test_accuracy_stats"]["mean"] <= hi, t["test_accuracy_stats"]
    assert len(t["switch"]) == 2 and len(t["steps_to_target"]) == 2, t
best = res["best_fixed"]
assert best == "constant", best
d = res["methods"]["three_phase"]["diff_vs_best_fixed"]
assert d["reference"] == best and d["stats"]["ci95"] is not None, d
for m in ("constant", "three_phase"):
    r = json.load(open(os.path.join(out, "runs", f"{m}-s0.json")))
    p = r["trajectory"][-1]
    for spec in ("covariance", "second_moment"):
        assert p[spec]["r90"] > 0 and p[spec]["pr"] > 0, (m, p)
    assert "switch" in r and r["mode"] == ("advise" if m == "constant" else "control")
print("torch_transformer short form ok:", res["commit"])
PY
PYTHONPATH=$site "$py" "$here/torch_transformer.py" --out "$out" --table
