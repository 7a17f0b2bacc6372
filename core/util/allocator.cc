#include "core/util/allocator.h"

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace spotter {

bool TuneAllocator(int trim_threshold_mb) {
#if defined(__GLIBC__)
  // 32 MiB is glibc's largest mmap threshold on 64-bit (setting it also stops
  // the dynamic adjustment, which would otherwise raise it only after the
  // first frees and keep trimming).
  const bool mmap_ok = mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1;
  const bool trim_ok = mallopt(M_TRIM_THRESHOLD, trim_threshold_mb << 20) == 1;
  return mmap_ok && trim_ok;
#else
  (void)trim_threshold_mb;
  return true;
#endif
}

}  // namespace spotter
