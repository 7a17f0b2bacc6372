// RunSession::ReportNonFiniteLoss: the divergence signal of a rank whose
// loss went NaN or infinite (docs/PHASES.md, "Divergence"). Apart from
// run_session.cc, which holds the stream machinery.
#include <cmath>
#include <optional>
#include <utility>

#include "client/cpp/run_session.h"

namespace spotter {

bool RunSession::ReportNonFiniteLoss(uint64_t step, double lr) {
  // One zero row of the run's width: the server counts the flag and never
  // sketches the row (SketchBatch.loss_non_finite). Its gradients are likely
  // non-finite too, and would be refused.
  // The run's width: the effective config's (set once OpenRun succeeded;
  // a session that never reached the server queues the default width).
  const std::optional<v1::RunConfig> c = config();
  const uint32_t k = c && c->sketch_dim() > 0 ? c->sketch_dim() : 256;
  v1::ConnectRequest msg;
  v1::SketchBatch* b = msg.mutable_sketch();
  b->set_step(step);
  b->set_rows(1);
  b->set_cols(k);
  b->set_encoding(v1::ENCODING_FLOAT32);
  b->mutable_data()->assign(static_cast<size_t>(k) * sizeof(float), '\0');
  b->set_loss(kNotGiven);
  b->set_lr(std::isinf(lr) ? kNotGiven : lr);
  b->set_loss_non_finite(true);
  return Enqueue(std::move(msg), step);
}

}  // namespace spotter
