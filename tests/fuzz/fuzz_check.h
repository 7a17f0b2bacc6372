// Invariant checks of the fuzz targets: a violation prints what broke and
// aborts, which libFuzzer and the replay tests report as a failure.
#ifndef SPOTTER_TESTS_FUZZ_FUZZ_CHECK_H_
#define SPOTTER_TESTS_FUZZ_FUZZ_CHECK_H_

#include <cstdio>
#include <cstdlib>

#define FUZZ_CHECK(cond, ...)                                                 \
  do {                                                                        \
    if (!(cond)) {                                                            \
      std::fprintf(stderr, "%s:%d: invariant broken: %s: ", __FILE__, __LINE__, \
                   #cond);                                                    \
      std::fprintf(stderr, __VA_ARGS__);                                      \
      std::fprintf(stderr, "\n");                                             \
      std::abort();                                                           \
    }                                                                         \
  } while (0)

#endif  // SPOTTER_TESTS_FUZZ_FUZZ_CHECK_H_
