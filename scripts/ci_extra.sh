#!/usr/bin/env bash
# The reliability builds CI runs after `make test` (docs/RELIABILITY.md):
#   tsa   clang-14 with -Wthread-safety -Werror=thread-safety: the server, the
#         client and everything linking them must compile (annotations are
#         only checked by clang). Build dir build-tsa, -O0.
#   asan  clang-14 with ASan + UBSan (-O1): the unit and integration suites,
#         the fuzz corpora, the crash loop and the load smoke, under the
#         sanitizers. Build dir build-asan.
#   tsan  clang-14 with TSan (-O1), same suites. By hand: Debian's Abseil and
#         gRPC are not built with TSan, so reports inside them are expected
#         (docs/RELIABILITY.md).
# Usage: scripts/ci_extra.sh [tsa] [asan] [tsan]     (default: tsa asan)
# Env: JOBS (2).
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=${JOBS:-2}
steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(tsa asan)
command -v clang++-14 >/dev/null || { echo "ci_extra: clang++-14 is missing (scripts/install-deps.sh)" >&2; exit 1; }

configure() {  # dir, extra cmake args...
  local dir=$1
  shift
  mkdir -p "$dir"
  cmake -S . -B "$dir" -DCMAKE_C_COMPILER=clang-14 -DCMAKE_CXX_COMPILER=clang++-14 \
    -DCMAKE_BUILD_TYPE=None "$@" > "$dir/configure.log" 2>&1 || { cat "$dir/configure.log"; exit 1; }
}

# The C++ suites (not the Python, deploy or experiment ones).
suite_targets() {
  local dir=$1
  # Test executables of the unit and integration suites, the fuzz replays,
  # the crash workload and the load tool, and the binaries they run.
  (cd tests && ls unit/*_test.cc integration/*_test.cc) | sed 's|.*/||; s|\.cc$||'
  (cd tests/fuzz && ls *_fuzz.cc) | sed 's|_fuzz\.cc$||; s|^|fuzz_replay_|'
  echo spotterd crash_workload spotter_load spotter_alternatives
}

for step in "${steps[@]}"; do
  case $step in
    tsa)
      echo "== clang thread-safety analysis (build-tsa)"
      configure build-tsa -DCMAKE_CXX_FLAGS=-O0 -DSPOTTER_THREAD_SAFETY=ON -DSPOTTER_BUILD_BENCH=OFF
      cmake --build build-tsa -j"$jobs" --target spotter_server spotter_client spotterd \
        crash_workload $(cd tests/fuzz && ls *_fuzz.cc | sed 's|_fuzz\.cc$||; s|^|fuzz_replay_|')
      echo "thread-safety analysis: clean"
      ;;
    asan|tsan)
      dir=build-$step
      san=address,undefined
      [ $step = tsan ] && san=thread
      echo "== $san sanitizers ($dir)"
      configure "$dir" "-DCMAKE_CXX_FLAGS=-O1 -g" -DSPOTTER_SANITIZE=$san
      cmake --build "$dir" -j"$jobs" --target $(suite_targets "$dir")
      # halt_on_error: any report fails the run. LSan stays on under ASan.
      export ASAN_OPTIONS=halt_on_error=1:detect_stack_use_after_return=1
      export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
      export TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1
      # Shadow memory and ASan's quarantine: the load smoke's RSS bounds are
      # for a plain build.
      export LOAD_RSS_LIMIT_MB=4096 LOAD_RSS_GROWTH_MB=1024
      # Left out under the sanitizers (5-10x slower code), with reasons in
      # docs/RELIABILITY.md: FourRanksAtDifferentSpeeds trains at 1,000
      # steps/s and needs the evaluations to keep up to see the automatic
      # transition before step 4,000. NinetyPercentIntervals... draws 2.5
      # million Gaussian rows of 4,096 coordinates to measure a statistical
      # property of code that SummaryTest and CoverageTest's other case run
      # under the sanitizers too. load.memory_per_run measures spotterd's RSS
      # per trajectory point, which under ASan is its quarantine and shadow
      # memory, and needs 8,000 evaluations in 20 s. AllocatorTest measures
      # glibc's heap, which the sanitizer's allocator replaces.
      (cd "$dir" && ctest --output-on-failure -j"$jobs" -L '^(unit|integration|fuzz|crash|load)$' \
        -E 'FourRanksAtDifferentSpeedsSwitchAtTheSameStep|NinetyPercentIntervalsHoldThePopulation|load\.memory_per_run|AllocatorTest' \
        --timeout 900 2>&1 | tee ctest.log)
      # No test may be skipped (as in `make test`).
      if grep -F '***Skipped' "$dir/ctest.log"; then echo "FAIL: skipped tests" >&2; exit 1; fi
      ;;
    *)
      echo "unknown step $step (expected tsa, asan or tsan)" >&2
      exit 2
      ;;
  esac
done
