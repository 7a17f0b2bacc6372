// The allocator settings of core/util/allocator.h against the real glibc heap:
// TuneAllocator is in force (sketch-sized blocks come from the heap, not
// mmap, and freed ones stay with the allocator), and HeapUsage tells memory
// in use from memory freed. On the code before this test TuneAllocator
// compiled to nothing and both failed.
#include "core/util/allocator.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <vector>

namespace spotter {
namespace {

#if defined(__GLIBC__)  // the settings are glibc's; elsewhere they are no-ops
TEST(AllocatorTest, SketchSizedBlocksComeFromTheHeapAndFreedOnesAreCountedFree) {
  ASSERT_TRUE(TuneAllocator(256));  // as spotterd
  // 32 blocks of 1 MiB: glibc's default mmap threshold is 128 KiB, so without
  // the setting each would be an mmap of its own (and a munmap when freed).
  constexpr size_t kBlock = 1 << 20, kCount = 32;
  constexpr double kTotal = double(kBlock) * kCount;
  const HeapUsage before = ReadHeapUsage();
  std::vector<char*> blocks;
  for (size_t i = 0; i < kCount; ++i) {
    blocks.push_back(static_cast<char*>(std::malloc(kBlock)));
    ASSERT_NE(blocks.back(), nullptr);
    std::memset(blocks.back(), 1, kBlock);
  }
  const HeapUsage allocated = ReadHeapUsage();
  EXPECT_EQ(allocated.mmapped, before.mmapped) << "1 MiB blocks were served by mmap";
  EXPECT_GE(double(allocated.in_use) - double(before.in_use), kTotal);
  // Free all but the last, which pins the heap's top: the freed 31 MiB stay
  // with the allocator, counted free and no longer in use.
  for (size_t i = 0; i + 1 < kCount; ++i) std::free(blocks[i]);
  const HeapUsage freed = ReadHeapUsage();
  const double freed_bytes = double(kBlock) * (kCount - 1);
  EXPECT_GE(double(allocated.in_use) - double(freed.in_use), freed_bytes);
  EXPECT_GE(double(freed.free) - double(allocated.free), freed_bytes);
  // Freeing the last one leaves 32 MiB free at the top, below the 256 MiB
  // trim threshold: kept, not returned to the kernel (glibc's default
  // threshold, 128 KiB, would trim it).
  std::free(blocks.back());
  const HeapUsage all_freed = ReadHeapUsage();
  EXPECT_GE(double(all_freed.free) - double(allocated.free), kTotal);
}
#endif

}  // namespace
}  // namespace spotter
