#!/usr/bin/env bash
# The long soak (docs/RELIABILITY.md, "Load and soak"): 256 Connect streams
# over 32 runs for 30 minutes against spotterd with a SQLite state file
# (synchronous=FULL), an operator forcing a phase every 500 ms. Fails on any
# upload neither acknowledged nor rejected, any stream error, or RSS growing
# more than 10% after the warm-up (the first 5 minutes). Writes the load
# tool's report plus the commit and the growth figures to OUT.
#   scripts/soak.sh [BUILD=build] [SECONDS=1800] [OUT=docs/perf/soak.json]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
seconds=${2:-1800}
out=${3:-docs/perf/soak.json}
warmup=${WARMUP_SECONDS:-300}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
"$build/bench/spotter_load" --spotterd "$build/server/spotterd" \
  --spotterd_args "--state_file=$dir/state.db" \
  --streams 256 --runs 32 --seconds "$seconds" --rows 8 --dim 128 --window 32 \
  --override_ms 500 --rss_limit_mb 4096 --report "$dir/report.json" | tee "$dir/load.log"
/usr/bin/python3 - "$dir/report.json" "$out" "$warmup" "$*" <<'PY'
import json, subprocess, sys
src, out, warmup, args = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
r = json.load(open(src))
series = r["rss_mb"]
after = [mb for t, mb in series if t >= warmup]
base, end, peak = after[0], after[-1], max(after)
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                        text=True).stdout.strip()
dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                       capture_output=True, text=True).stdout.strip()
r.update({"commit": commit + ("-dirty" if dirty else ""),
          "command": "scripts/soak.sh " + args, "warmup_seconds": warmup,
          "rss_after_warmup_mb": base, "rss_end_mb": end, "rss_peak_after_warmup_mb": peak,
          "growth_after_warmup": round((end - base) / base, 4)})
json.dump(r, open(out, "w"), indent=1)
print(json.dumps({k: v for k, v in r.items() if not isinstance(v, (list, dict))}))
ok = r["acked"] + r["rejected"] == r["sent"] and r["errors"] == 0 and r["rejected"] == 0
if not ok:
    sys.exit("FAIL: an upload was lost, rejected or a stream failed")
if (peak - base) / base > 0.10:
    sys.exit(f"FAIL: RSS grew {100 * (peak - base) / base:.1f}% after the warm-up (limit 10%)")
PY
