#include "core/util/allocator.h"

// Any C library header defines __GLIBC__ on glibc; without one before the
// test below, every glibc branch of this file compiled to nothing (so
// TuneAllocator was a no-op from its first commit until AllocatorTest).
#include <cstdlib>

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

HeapUsage ReadHeapUsage() {
  HeapUsage u;
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
  const struct mallinfo2 m = mallinfo2();
  u.in_use = m.uordblks + m.hblkhd;
  u.mmapped = m.hblkhd;
  u.free = m.fordblks;
#endif
  return u;
}

}  // namespace spotter
