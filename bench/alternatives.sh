#!/usr/bin/env bash
# Spotter against the alternatives a user would pick (docs/PERFORMANCE.md).
#
#   bench/alternatives.sh BUILD_DIR OUT_DIR
#
# (a) One stream of planted power-law rows at k = 256 and k = 1024 (l = 64,
#     64-row messages, an evaluation every 10 messages) fed to Spotter's
#     server path (spotter_alternatives --mode=spotter), its FD core alone
#     (--mode=fd), the exact k x k approach (--mode=exact) and the NumPy peer
#     bench/numpy_fd.py (classic FD, one SVD per rotation; float32 and float64
#     buffers; also its Gram-matrix variant), all single-threaded. The NumPy
#     peer runs with the BLAS/LAPACK the system's numpy loads, and again with
#     OpenBLAS when a directory holding OpenBLAS's libblas.so.3/liblapack.so.3
#     is found ($OPENBLAS_DIR, else Debian's libopenblas0-pthread location).
# (b) The exact approach against Spotter for k in 64 ... 4096 (same rows per
#     k), exact stopped after $EXACT_BUDGET seconds (once one evaluation ran).
#
# Writes OUT_DIR/alternatives.json (a list of the JSON lines, each tagged with
# "group" and "blas") and prints the tables. About 2-3 minutes on 2 cores.
# Knobs (environment): ROWS (20000), SWEEP_ROWS (6400), EXACT_BUDGET (15),
# SWEEP_KS ("64 128 256 512 1024 2048 4096"), PYTHON (/usr/bin/python3);
# ALTERNATIVES_SMOKE=1 runs every step on tiny inputs (seconds; the CI smoke
# of bench/perf_e2e.py).
set -euo pipefail

if [[ $# -ne 2 ]]; then
  echo "usage: $0 BUILD_DIR OUT_DIR" >&2
  exit 2
fi
BUILD=$1
OUT=$2
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=$BUILD/bench/spotter_alternatives
PY=${PYTHON:-/usr/bin/python3}
PEER=$HERE/numpy_fd.py
if [[ -n ${ALTERNATIVES_SMOKE:-} ]]; then
  : "${ROWS:=1280}" "${SWEEP_ROWS:=640}" "${EXACT_BUDGET:=2}" "${SWEEP_KS:=64 256}" "${COMMON_KS:=256}"
fi
ROWS=${ROWS:-20000}
SWEEP_ROWS=${SWEEP_ROWS:-6400}
EXACT_BUDGET=${EXACT_BUDGET:-15}
SWEEP_KS=${SWEEP_KS:-"64 128 256 512 1024 2048 4096"}
L=64
BATCH=64
EVAL=10
COMMON_KS=${COMMON_KS:-"256 1024"}

[[ -x $BIN ]] || { echo "no $BIN (cmake --build $BUILD --target spotter_alternatives)" >&2; exit 1; }
mkdir -p "$OUT"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
LINES=$WORK/lines.jsonl
: >"$LINES"

OPENBLAS=${OPENBLAS_DIR:-/usr/lib/x86_64-linux-gnu/openblas-pthread}
if [[ ! -e $OPENBLAS/liblapack.so.3 ]]; then OPENBLAS=""; fi

# tag GROUP BLAS: adds the fields to the JSON line on stdin, appends it to LINES.
tag() {
  "$PY" -c 'import json, sys
d = json.loads(sys.stdin.read())
d["group"], d["blas_label"] = sys.argv[1], sys.argv[2]
print(json.dumps(d))' "$1" "$2" >>"$LINES"
}

common=(--l=$L --batch=$BATCH --eval_every=$EVAL)
start=$SECONDS

# (a) the common configuration, one rows file per k.
for k in $COMMON_KS; do
  f=$WORK/rows_$k.f32
  "$BIN" --k="$k" --rows="$ROWS" --write_rows="$f" --mode=fd --json >/dev/null
  for mode in spotter fd exact; do
    "$BIN" --mode=$mode --k="$k" --rows_file="$f" "${common[@]}" --max_seconds=60 --json |
      tag common native
  done
  # The system's numpy as it is: the published form, numpy's default dtype.
  "$PY" "$PEER" --rows_file="$f" --k="$k" "${common[@]}" --dtype=float64 --json |
    tag common system
  if [[ -n $OPENBLAS ]]; then
    for variant in "svd float32" "svd float64" "gram float64"; do
      set -- $variant
      LD_LIBRARY_PATH=$OPENBLAS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} \
        "$PY" "$PEER" --rows_file="$f" --k="$k" "${common[@]}" --method="$1" --dtype="$2" \
        --json | tag common openblas
    done
  else
    "$PY" "$PEER" --rows_file="$f" --k="$k" "${common[@]}" --dtype=float32 --json |
      tag common system
  fi
  rm -f "$f"
done
echo "common configuration: $((SECONDS - start)) s" >&2

# (b) exact vs Spotter against k (rows generated in-process, same seed).
for k in $SWEEP_KS; do
  for mode in spotter exact; do
    "$BIN" --mode=$mode --k="$k" --rows="$SWEEP_ROWS" "${common[@]}" \
      --max_seconds="$EXACT_BUDGET" --json | tag sweep eigen
  done
done
echo "total: $((SECONDS - start)) s" >&2

"$PY" - "$LINES" "$OUT/alternatives.json" <<'EOF'
import json, sys

lines = [json.loads(x) for x in open(sys.argv[1]) if x.strip()]
with open(sys.argv[2], "w") as f:
    json.dump(lines, f, indent=1)
    f.write("\n")

def name(d):
    if d["mode"] == "numpy":
        return f"numpy {d['method']} {d['dtype']} ({d['blas_label']})"
    return d["mode"]

def r90(d):
    v = d["r90"]
    return "censored" if v is None else (f"{v:g}" + ("*" if d.get("r90_censored") else ""))

print("\n(a) common configuration: l=64, batch 64, evaluation every 10 messages, one thread")
print("| k | implementation | rows | rows/s | rows/CPU-s | eval ms | state KiB | r90 | PR | Spotter rows/s / this |")
print("|---|---|---|---|---|---|---|---|---|---|")
for k in sorted({d["k"] for d in lines if d["group"] == "common"}):
    rows = [d for d in lines if d["group"] == "common" and d["k"] == k]
    sp = next(d for d in rows if d["mode"] == "spotter")
    for d in rows:
        print(f"| {k} | {name(d)} | {d['rows']} | {d['rows_per_s']:,.0f} | "
              f"{d['rows_per_cpu_s']:,.0f} | {1e3 * d['eval_seconds_mean']:.2f} | "
              f"{d['peak_rss_or_state_bytes'] / 1024:,.0f} | {r90(d)} | {d['pr']:.3f} | "
              f"{sp['rows_per_s'] / d['rows_per_s']:.2f} |")

print("\n(b) exact k x k covariance + eigensolver vs Spotter, %s rows per k" %
      next((d["rows"] for d in lines if d["group"] == "sweep" and d["mode"] == "spotter"), "?"))
print("| k | Spotter rows/s | Spotter eval ms | Spotter state KiB | exact rows/s | exact eval ms "
      "| exact state MiB | exact rows fed | Spotter / exact rows/s | r90 Spotter / exact | PR Spotter / exact |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for k in sorted({d["k"] for d in lines if d["group"] == "sweep"}):
    sp = next(d for d in lines if d["group"] == "sweep" and d["k"] == k and d["mode"] == "spotter")
    ex = next(d for d in lines if d["group"] == "sweep" and d["k"] == k and d["mode"] == "exact")
    fed = f"{ex['rows']}" + (" (budget)" if ex["stopped_early"] else "")
    print(f"| {k} | {sp['rows_per_s']:,.0f} | {1e3 * sp['eval_seconds_mean']:.1f} | "
          f"{sp['peak_rss_or_state_bytes'] / 1024:,.0f} | {ex['rows_per_s']:,.0f} | "
          f"{1e3 * ex['eval_seconds_mean']:,.1f} | {ex['peak_rss_or_state_bytes'] / 2**20:,.1f} | "
          f"{fed} | {sp['rows_per_s'] / ex['rows_per_s']:.2f} | {r90(sp)} / {r90(ex)} | "
          f"{sp['pr']:.3f} / {ex['pr']:.3f} |")
print(f"\nwrote {sys.argv[2]}")
EOF
