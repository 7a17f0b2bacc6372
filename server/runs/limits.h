// Server-side limits on what clients may send and hold. Every breach is
// answered with a clear error naming the limit (RESOURCE_EXHAUSTED for
// quotas, a Reject for a bad message) and counted in
// spotter_rejects_total{reason}.
#ifndef SPOTTER_SERVER_RUNS_LIMITS_H_
#define SPOTTER_SERVER_RUNS_LIMITS_H_

#include <cstdint>

namespace spotter {

struct Limits {
  uint32_t max_sketch_dim = 16384;  // largest k a run may configure
  uint32_t max_sketch_rows = 1024;  // largest l a run may configure
  uint32_t max_batch_rows = 8192;   // most rows in one SketchBatch
  uint32_t max_world_size = 65536;  // most ranks per run
  uint32_t max_runs = 10000;        // runs held at once (active + finished), server-wide
  // Runs one principal (token) may hold at once; 0: no cap. Only with tokens.
  uint32_t max_runs_per_principal = 0;
  // Largest message accepted, bytes. A larger Connect message is rejected
  // (reason message_too_large) and the stream goes on; gRPC itself refuses
  // messages above twice this (RESOURCE_EXHAUSTED) before they are read.
  int64_t max_message_bytes = 64 << 20;
  uint32_t max_streams = 4096;  // Connect + WatchRun streams open at once
  // Connect streams open on one run; 0: 2 x world_size + 2 (a live stream per
  // rank and room for reconnects).
  uint32_t max_streams_per_run = 0;
  uint32_t max_watchers_per_run = 64;  // WatchRun streams open on one run
  // Largest |value| in a sketch batch. Larger values would overflow the
  // float32 sketch arithmetic (squares of sums of rows) and poison the run's
  // sketch; gradients scaled by a loss scale stay far below it.
  double max_abs_value = 1e9;
  // Bytes of accepted uploads waiting for their commit, server-wide. Above
  // it a stream that sends more is closed with RESOURCE_EXHAUSTED (its
  // client replays after reconnecting).
  int64_t memory_budget_bytes = int64_t{512} << 20;
  // gRPC's own memory (grpc::ResourceQuota): buffers of connections and
  // messages being read. Under pressure gRPC refuses new streams itself
  // (RST_STREAM ENHANCE_YOUR_CALM).
  int64_t grpc_memory_quota_bytes = int64_t{1} << 30;
  // Messages a Connect stream may have awaiting their commit before the
  // server stops reading from it (backpressure, no error).
  uint32_t max_unacked_per_stream = 256;
  // Bytes of rows one ImportRun may hold (they are all in memory until the
  // run is restored; docs/SCALING.md, "Moving runs").
  int64_t max_import_bytes = int64_t{512} << 20;
};

}  // namespace spotter

#endif  // SPOTTER_SERVER_RUNS_LIMITS_H_
