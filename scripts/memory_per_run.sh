#!/usr/bin/env bash
# Memory of one long run (docs/RELIABILITY.md, "Memory per run"): spotterd
# with a state file, one run with eval_every=1 fed by one stream of small
# uploads until it has made at least POINTS trajectory points; spotterd's RSS
# sampled every second. Writes JSON (git commit, points, RSS after the first
# quarter and at the end, the series) to OUT.
#   scripts/memory_per_run.sh [BUILD=build] [POINTS=60000] [OUT=docs/perf/memory_per_run.json]
# SPOTTERD=path overrides the spotterd measured (e.g. an older build);
# MAX_GROWTH_MB=x fails when RSS grew more than x MiB after the first quarter
# (the CI form, tests/load/CMakeLists.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
points=${2:-60000}
out=${3:-docs/perf/memory_per_run.json}
spotterd=${SPOTTERD:-$build/server/spotterd}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
# ~4000 evaluations/s on the 2-vCPU reference VM; run long enough, then count.
seconds=${SECONDS_PER_RUN:-$(( points / 900 + 10 ))}
"$build/bench/spotter_load" --spotterd "$spotterd" \
  --spotterd_args="--state_file=$dir/state.db" --streams 1 --runs 1 --eval_every 1 \
  --override_ms 0 --seconds "$seconds" --report "$dir/load.json" > "$dir/load.log" 2>&1 \
  || { cat "$dir/load.log"; exit 1; }
/usr/bin/python3 - "$dir" "$out" "$points" "$spotterd" "$*" <<'PY'
import json, sqlite3, subprocess, sys
d, out, want, spotterd, args = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
load = json.load(open(f"{d}/load.json"))
n = sqlite3.connect(f"{d}/state.db").execute("select count(*) from points").fetchone()[0]
series = load["rss_mb"]
quarter = series[len(series) // 4][1]
end = series[-1][1]
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                        text=True).stdout.strip()
dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                       capture_output=True, text=True).stdout.strip()
res = {"commit": commit + ("-dirty" if dirty else ""), "spotterd": spotterd,
       "command": ("SPOTTERD=" + spotterd + " " if "SPOTTERD" in __import__("os").environ else "")
                  + "scripts/memory_per_run.sh " + args,
       "points": n, "uploads": load["acked"], "seconds": load["seconds"],
       "rss_start_mb": series[0][1], "rss_quarter_mb": quarter, "rss_end_mb": end,
       "growth_after_quarter_mb": round(end - quarter, 2),
       "bytes_per_point_after_quarter": round((end - quarter) * 2**20 / max(1, n * 3 / 4)),
       "rss_mb": series}
json.dump(res, open(out, "w"), indent=1)
print(json.dumps({k: v for k, v in res.items() if k != "rss_mb"}))
if n < want:
    sys.exit(f"only {n} points were made (wanted {want}); raise SECONDS_PER_RUN")
limit = __import__("os").environ.get("MAX_GROWTH_MB")
if limit and end - quarter > float(limit):
    sys.exit(f"FAIL: RSS grew {end - quarter:.1f} MiB after the first quarter of {n} points "
             f"(limit {limit} MiB): memory per run is not bounded")
PY
