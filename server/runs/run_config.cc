#include "server/runs/run_config.h"

#include <cmath>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/cord.h"
#include "absl/strings/str_format.h"
#include "core/util/status_macros.h"
#include "google/protobuf/util/message_differencer.h"

namespace spotter {
namespace {

absl::Status OutOfRange(const char *field, double value,
                        const std::string &range) {
  return absl::InvalidArgumentError(absl::StrFormat(
      "config.%s = %g is out of range: expected %s", field, value, range));
}

// Sets a scalar proto field to `value` when it is at its zero default.
#define SPOTTER_DEFAULT(msg, field, value)                                     \
  if ((msg)->field() == decltype((msg)->field()){})                            \
  (msg)->set_##field(value)

} // namespace

absl::Status ValidateRunName(const std::string &name) {
  if (name.empty() || name.size() > 128) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "run name must have 1 to 128 characters, got %d", name.size()));
  }
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                    (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
    if (!ok) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "run name %s has a character outside [A-Za-z0-9._-]", name));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::RunConfig> ResolveRunConfig(const v1::RunConfig &in,
                                               const Limits &limits) {
  v1::RunConfig c = in;
  // Enums first: unknown values are rejected, not defaulted.
  if (!v1::ProjectionKind_IsValid(c.projection().kind())) {
    return OutOfRange("projection.kind", c.projection().kind(),
                      "a ProjectionKind value");
  }
  if (!v1::WindowKind_IsValid(c.window()))
    return OutOfRange("window", c.window(), "a WindowKind value");
  if (!v1::Mode_IsValid(c.mode()))
    return OutOfRange("mode", c.mode(), "a Mode value");
  if (!v1::MetricGoal_IsValid(c.phase().val_goal())) {
    return OutOfRange("phase.val_goal", c.phase().val_goal(),
                      "a MetricGoal value");
  }

  if (c.total_steps() == 0)
    return OutOfRange("total_steps", 0, "> 0 (required)");
  if (c.total_steps() > (uint64_t{1} << 40)) {
    return OutOfRange("total_steps", static_cast<double>(c.total_steps()),
                      "<= 2^40");
  }
  if (!(c.peak_lr() > 0.0) || !std::isfinite(c.peak_lr())) {
    return OutOfRange("peak_lr", c.peak_lr(), "a finite value > 0 (required)");
  }
  SPOTTER_DEFAULT(c.mutable_projection(), kind,
                  v1::PROJECTION_KIND_COUNT_SKETCH);
  if (c.sketch_dim() == 0)
    c.set_sketch_dim(256);
  if (c.sketch_dim() < 2 || c.sketch_dim() > limits.max_sketch_dim) {
    return OutOfRange(
        "sketch_dim", c.sketch_dim(),
        absl::StrFormat("in [2, %d] (server limit)", limits.max_sketch_dim));
  }
  if (c.sketch_rows() == 0)
    c.set_sketch_rows(std::min<uint32_t>(64, c.sketch_dim()));
  if (c.sketch_rows() < 2 || c.sketch_rows() > c.sketch_dim() ||
      c.sketch_rows() > limits.max_sketch_rows) {
    return OutOfRange("sketch_rows", c.sketch_rows(),
                      absl::StrFormat("in [2, min(sketch_dim = %d, %d)]",
                                      c.sketch_dim(), limits.max_sketch_rows));
  }
  if (c.window() == v1::WINDOW_KIND_UNSPECIFIED)
    c.set_window(v1::WINDOW_KIND_EXPONENTIAL);
  if (c.decay() == 0.0)
    c.set_decay(0.99);
  if (!(c.decay() > 0.0 && c.decay() <= 1.0))
    return OutOfRange("decay", c.decay(), "in (0, 1]");
  if (c.window_steps() == 0)
    c.set_window_steps(200);
  if (c.window_steps() > (uint64_t{1} << 32)) {
    return OutOfRange("window_steps", static_cast<double>(c.window_steps()),
                      "in [1, 2^32]");
  }
  if (c.eval_every() == 0)
    c.set_eval_every(10);
  if (c.eval_every() > 1000000)
    return OutOfRange("eval_every", c.eval_every(), "in [1, 1000000]");
  if (c.world_size() == 0)
    c.set_world_size(1);
  if (c.world_size() > limits.max_world_size) {
    return OutOfRange(
        "world_size", c.world_size(),
        absl::StrFormat("in [1, %d] (server limit)", limits.max_world_size));
  }
  if (c.steps_per_epoch() == 0)
    c.set_steps_per_epoch(std::max<uint64_t>(1, c.total_steps() / 10));
  if (!c.has_base_lr())
    c.set_base_lr(c.peak_lr() / 10.0);
  if (c.mode() == v1::MODE_UNSPECIFIED)
    c.set_mode(v1::MODE_CONTROL);

  v1::PhaseConfig *p = c.mutable_phase();
  SPOTTER_DEFAULT(p, warmup_fraction, 0.15);
  SPOTTER_DEFAULT(p, id_drop_threshold, 0.05);
  SPOTTER_DEFAULT(p, rank_fraction_max, 0.2);
  SPOTTER_DEFAULT(p, plateau_epsilon, 0.1);
  SPOTTER_DEFAULT(p, window_evals, 5u);
  SPOTTER_DEFAULT(p, loss_decrease_min, 0.01);
  SPOTTER_DEFAULT(p, confirm_evals, 3u);
  SPOTTER_DEFAULT(p, hysteresis, ControllerConfig{}.hysteresis);
  SPOTTER_DEFAULT(p, min_dwell_steps,
                  std::max<uint64_t>(1, c.total_steps() / 20));
  SPOTTER_DEFAULT(p, lr_cut, 0.5);
  SPOTTER_DEFAULT(p, refine_loss_rate_min, 0.02);
  SPOTTER_DEFAULT(p, refine_budget_fraction, 0.75);
  if (!p->has_lr_min())
    p->set_lr_min(c.peak_lr() / 100.0);
  SPOTTER_DEFAULT(p, val_patience, 5u);
  SPOTTER_DEFAULT(p, val_min_delta, 1e-4);
  if (p->val_metric().empty())
    p->set_val_metric("val_loss");
  if (p->val_goal() == v1::METRIC_GOAL_UNSPECIFIED)
    p->set_val_goal(v1::METRIC_GOAL_MINIMIZE);
  SPOTTER_DEFAULT(p, kfac_damping, 1e-3);
  SPOTTER_DEFAULT(p, kfac_factor_interval, 10u);
  SPOTTER_DEFAULT(p, kfac_inverse_interval, 100u);
  SPOTTER_DEFAULT(p, delivery_budget_seconds, 2.0);
  if (!(p->delivery_budget_seconds() > 0.0 &&
        p->delivery_budget_seconds() <= 3600.0)) {
    return OutOfRange("phase.delivery_budget_seconds",
                      p->delivery_budget_seconds(), "in (0, 3600]");
  }
  const absl::Status s = ToControllerConfig(c).Validate();
  if (!s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("config.", s.message()));
  }
  return c;
}

std::string ConfigDifference(const v1::RunConfig &a, const v1::RunConfig &b) {
  v1::RunConfig x = a, y = b;
  x.clear_labels();
  y.clear_labels();
  std::string diff;
  google::protobuf::util::MessageDifferencer d;
  d.ReportDifferencesToString(&diff);
  if (d.Compare(x, y))
    return "";
  return diff.empty() ? "configs differ" : diff;
}

ControllerConfig ToControllerConfig(const v1::RunConfig &c) {
  const v1::PhaseConfig &p = c.phase();
  ControllerConfig o;
  o.total_steps = c.total_steps();
  o.steps_per_epoch = c.steps_per_epoch();
  o.base_lr = c.base_lr();
  o.peak_lr = c.peak_lr();
  o.sketch_rows = static_cast<int>(c.sketch_rows());
  o.warmup_fraction = p.warmup_fraction();
  o.id_drop_threshold = p.id_drop_threshold();
  o.rank_fraction_max = p.rank_fraction_max();
  o.plateau_epsilon = p.plateau_epsilon();
  o.window_evals =
      static_cast<int>(std::min<uint32_t>(p.window_evals(), 1u << 30));
  o.loss_decrease_min = p.loss_decrease_min();
  o.confirm_evals =
      static_cast<int>(std::min<uint32_t>(p.confirm_evals(), 1u << 30));
  o.hysteresis = p.hysteresis();
  o.min_dwell_steps = p.min_dwell_steps();
  o.lr_cut = p.lr_cut();
  o.refine_loss_rate_min = p.refine_loss_rate_min();
  o.refine_budget_fraction = p.refine_budget_fraction();
  o.lr_min = p.lr_min();
  o.val_patience =
      static_cast<int>(std::min<uint32_t>(p.val_patience(), 1u << 30));
  o.val_min_delta = p.val_min_delta();
  o.val_maximize = p.val_goal() == v1::METRIC_GOAL_MAXIMIZE;
  o.kfac_damping = p.kfac_damping();
  o.kfac_factor_interval = p.kfac_factor_interval();
  o.kfac_inverse_interval = p.kfac_inverse_interval();
  o.noise_std = p.noise_std();
  return o;
}

WindowOptions ToWindowOptions(const v1::RunConfig &c) {
  WindowOptions w;
  w.kind = c.window() == v1::WINDOW_KIND_FIXED ? WindowKind::kFixed
                                               : WindowKind::kExponential;
  w.decay = c.decay();
  w.window_steps = c.window_steps();
  return w;
}

ProjectionKind ToProjectionKind(v1::ProjectionKind kind) {
  return kind == v1::PROJECTION_KIND_GAUSSIAN ? ProjectionKind::kGaussian
                                              : ProjectionKind::kCountSketch;
}

SpectrumOptions ToSpectrumOptions(const v1::RunConfig &c) {
  SpectrumOptions o;
  o.sketch_rows = static_cast<int>(c.sketch_rows());
  o.dim = static_cast<int>(c.sketch_dim());
  o.projection = ToProjectionKind(c.projection().kind());
  return o;
}

} // namespace spotter
