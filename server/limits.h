// Server-side limits on what clients may send. Every breach is answered with
// a clear error naming the limit, and counted.
#ifndef SPOTTER_SERVER_LIMITS_H_
#define SPOTTER_SERVER_LIMITS_H_

#include <cstdint>

namespace spotter {

struct Limits {
  uint32_t max_sketch_dim = 16384;    // largest k a run may configure
  uint32_t max_sketch_rows = 1024;    // largest l a run may configure
  uint32_t max_batch_rows = 8192;     // most rows in one SketchBatch
  uint32_t max_world_size = 65536;    // most ranks per run
  uint32_t max_runs = 10000;          // runs held at once (active + finished)
  int64_t max_message_bytes = 64 << 20;  // gRPC max receive message size
};

}  // namespace spotter

#endif  // SPOTTER_SERVER_LIMITS_H_
