#include "server/runs/trajectory_point.h"

#include <limits>

#include "proto/convert/directive.h"
#include "proto/convert/summary.h"

namespace spotter {

PointTraining TrainingSince(const std::vector<RankLossSnapshot>& ranks, LossBaselines* baselines) {
  constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
  double loss_sum = 0.0;
  uint64_t loss_count = 0;
  const RankLossSnapshot* latest = nullptr;
  for (const RankLossSnapshot& rl : ranks) {
    auto& base = (*baselines)[rl.rank];
    loss_sum += rl.sum - base.first;
    loss_count += rl.count - base.second;
    base = {rl.sum, rl.count};
    if (rl.any_step && (latest == nullptr || rl.last_step > latest->last_step)) latest = &rl;
  }
  PointTraining t;
  t.loss = loss_count > 0 ? loss_sum / static_cast<double>(loss_count)
                          : (latest ? latest->last_loss : kNaN);
  t.lr = latest ? latest->last_lr : kNaN;
  return t;
}

v1::TrajectoryPoint BuildTrajectoryPoint(uint64_t step, absl::Time now, Phase phase_in_force,
                                         const PointTraining& training, double val_metric,
                                         const RunEvaluation& eval) {
  const Diagnostics& diag = *eval.merged;
  v1::TrajectoryPoint p;
  p.set_step(step);
  ToProto(now, p.mutable_time());
  p.set_phase(ToProto(phase_in_force));
  p.set_loss(training.loss);
  p.set_lr(training.lr);
  ToProto(diag.covariance, p.mutable_covariance());
  ToProto(diag.second_moment, p.mutable_second_moment());
  p.set_noise_scale(diag.noise_scale);
  p.set_mean_gradient_sq_norm(diag.mean_gradient_sq_norm);
  p.set_effective_samples(diag.effective_samples);
  p.set_val_metric(val_metric);
  p.set_rows(diag.rows);
  for (const RankDivergence& d : eval.divergent) p.add_divergent_ranks(d.rank);
  return p;
}

}  // namespace spotter
