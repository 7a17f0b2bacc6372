// Allocator settings for the processes that run the sketch math.
//
// glibc serves blocks of 128 KiB and more by mmap and returns freed heap tops
// to the kernel (trim) once they pass a threshold. A Frequent Directions
// shrink allocates several such blocks (the Gram matrix, the product
// accumulator; hundreds of KiB at k = 256, l = 64) and frees them a moment
// later, on several threads: every message then pays page faults and, for
// the unmaps, TLB shootdowns across cores. Profiled under spotter_load, that
// was up to half of spotterd's CPU at 8-64 KiB messages
// (docs/PERFORMANCE.md, "Profile").
#ifndef SPOTTER_CORE_UTIL_ALLOCATOR_H_
#define SPOTTER_CORE_UTIL_ALLOCATOR_H_

namespace spotter {

// Keeps blocks up to 32 MiB on the heap and freed memory up to
// `trim_threshold_mb` per arena in the process (glibc mallopt; a no-op
// elsewhere). Returns false if the C library refused.
bool TuneAllocator(int trim_threshold_mb = 256);

// What the allocator holds, in bytes (glibc mallinfo2; zeros elsewhere).
// `in_use` is allocated and not yet freed (heap and mmapped blocks);
// `mmapped` is the part of it served by mmap; `free` is freed but kept in
// the arenas: resident once touched, reused by later allocations, not a
// leak. Under the soak's load fragmentation keeps `free` at one to three
// times `in_use` (docs/RELIABILITY.md, "Where spotterd's memory is").
struct HeapUsage {
  unsigned long long in_use = 0;
  unsigned long long mmapped = 0;
  unsigned long long free = 0;
};
HeapUsage ReadHeapUsage();

}  // namespace spotter

#endif  // SPOTTER_CORE_UTIL_ALLOCATOR_H_
