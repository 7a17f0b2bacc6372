#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan + coverage) and runs
# each for a time budget, starting from the checked-in seed corpus.
#   scripts/fuzz.sh [SECONDS_PER_TARGET=60] [TARGET...]
# Env: BUILD (default build-fuzz), JOBS (2), WORK (default $BUILD/fuzz-work:
# new inputs found are kept there, the checked-in corpus is not touched;
# copy interesting ones into tests/fuzz/corpus/<target>/ by hand).
# A crash leaves a reproducer crash-* in WORK/<target>/ and fails the script;
# replay it with $BUILD/tests/fuzz/fuzz_replay_<target> <file>.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(trainer_message controller frequent_directions checkpoint)
build=${BUILD:-build-fuzz}
mkdir -p "$build"
tmp_log=$build/configure.log
work=${WORK:-$build/fuzz-work}
command -v clang++-14 >/dev/null || { echo "fuzz.sh: clang++-14 is missing (apt-get install clang-14 libclang-rt-14-dev)" >&2; exit 1; }
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_COMPILER=clang-14 -DCMAKE_CXX_COMPILER=clang++-14 \
  -DSPOTTER_FUZZ=ON -DSPOTTER_SANITIZE=address,undefined -DSPOTTER_BUILD_BENCH=OFF > "$tmp_log" 2>&1 \
  || { cat "$tmp_log"; exit 1; }
cmake --build "$build" -j"${JOBS:-2}" --target $(printf 'fuzz_%s ' "${targets[@]}")
status=0
for t in "${targets[@]}"; do
  mkdir -p "$work/$t"
  echo "== fuzz_$t for ${seconds}s"
  # -rss_limit_mb: a target that needs more is a finding. ASan's leak check
  # stays on.
  if ! (cd "$work/$t" && "$OLDPWD/$build/tests/fuzz/fuzz_$t" -max_total_time="$seconds" \
        -rss_limit_mb=2048 -timeout=30 -print_final_stats=1 \
        . "$OLDPWD/tests/fuzz/corpus/$t" 2>&1 | tail -25); then
    status=1
  fi
  if ls "$work/$t"/crash-* "$work/$t"/leak-* "$work/$t"/oom-* "$work/$t"/timeout-* >/dev/null 2>&1; then
    echo "fuzz_$t: FINDINGS in $work/$t:"; ls "$work/$t" | grep -E '^(crash|leak|oom|timeout)-'
    status=1
  fi
done
exit $status
