// The RunConfig field table (run_config_fields.h): one entry per field of
// RunConfig, ProjectionSpec and PhaseConfig.
#include "server/runs/run_config_fields.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace spotter {
namespace {

// The v1 enum value of a core enum.
double V1Value(WindowKind kind) {
  return kind == WindowKind::kFixed ? v1::WINDOW_KIND_FIXED : v1::WINDOW_KIND_EXPONENTIAL;
}
double V1Value(ProjectionKind kind) {
  switch (kind) {
    case ProjectionKind::kGaussian:
      return v1::PROJECTION_KIND_GAUSSIAN;
    case ProjectionKind::kIdentity:
      return v1::PROJECTION_KIND_IDENTITY;
    default:
      return v1::PROJECTION_KIND_COUNT_SKETCH;
  }
}

// A count the client sends as uint32 into the core's int member: values above
// 2^30, out of every range, are clamped there so that the conversion stays
// defined (Validate() then reports the clamped value).
int ClampedInt(uint32_t v) { return static_cast<int>(std::min<uint32_t>(v, 1u << 30)); }

// What a range check returns: the accepted range when the value is out of it.
using ExpectedRange = std::optional<std::string>;

// The designated initializers below leave every member they do not name at its
// default on purpose; GCC would warn about each.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

// The table. Order is resolution order: a derived default may read only the
// fields above it, and the server range checks run in this order (the first
// failure is the one reported). Keep it: clients see which error comes first.
}  // namespace

std::vector<ConfigField> MakeRunConfigFields() {
  return {
      // --- Required. -------------------------------------------------------
      {.path = "total_steps",
       .rule = DefaultRule::kRequired,
       .out_of_range = [](double v, const v1::RunConfig&, const Limits&) -> ExpectedRange {
         if (v == 0) return "> 0 (required)";
         if (v > static_cast<double>(uint64_t{1} << 40)) return "<= 2^40";
         return std::nullopt;
       },
       .to_core = [](const v1::RunConfig& c,
                     RunCoreConfig* o) { o->controller.total_steps = c.total_steps(); },
       .from_core = [](const RunCoreConfig& o) -> double {
         return static_cast<double>(o.controller.total_steps);
       }},
      {.path = "peak_lr",
       .rule = DefaultRule::kRequired,
       .out_of_range = [](double v, const v1::RunConfig&, const Limits&) -> ExpectedRange {
         if (!(v > 0.0) || !std::isfinite(v)) return "a finite value > 0 (required)";
         return std::nullopt;
       },
       .to_core = [](const v1::RunConfig& c,
                     RunCoreConfig* o) { o->controller.peak_lr = c.peak_lr(); },
       .from_core = [](const RunCoreConfig& o) -> double { return o.controller.peak_lr; }},

      // --- Sketch and projection. -------------------------------------------
      {.path = "projection.kind",
       .default_value = [](const v1::RunConfig&) -> ConfigValue {
         return V1Value(SpectrumOptions{}.projection);
       },
       .to_core =
           [](const v1::RunConfig& c, RunCoreConfig* o) {
             o->spectrum.projection = ToProjectionKind(c.projection().kind());
           },
       .from_core = [](const RunCoreConfig& o) { return V1Value(o.spectrum.projection); }},
      {.path = "projection.seed", .rule = DefaultRule::kNone},       // every seed is a seed
      {.path = "projection.input_dim",
       .rule = DefaultRule::kNone,  // 0: not declared
       .out_of_range = [](double v, const v1::RunConfig& c, const Limits&) -> ExpectedRange {
         const int k = c.sketch_dim() ? static_cast<int>(c.sketch_dim()) : SpectrumOptions{}.dim;
         if (c.projection().kind() == v1::PROJECTION_KIND_IDENTITY && v > k) {
           return absl::StrFormat(
               "at most sketch_dim (%d) with PROJECTION_KIND_IDENTITY (unprojected rows)", k);
         }
         return std::nullopt;
       }},
      {.path = "sketch_dim",
       .default_value = [](const v1::RunConfig&) -> ConfigValue {
         return static_cast<double>(SpectrumOptions{}.dim);
       },
       .out_of_range = [](double v, const v1::RunConfig&, const Limits& limits) -> ExpectedRange {
         if (v < 2 || v > limits.max_sketch_dim) {
           return absl::StrFormat("in [2, %d] (server limit)", limits.max_sketch_dim);
         }
         return std::nullopt;
       },
       .to_core = [](const v1::RunConfig& c,
                     RunCoreConfig* o) { o->spectrum.dim = static_cast<int>(c.sketch_dim()); },
       .from_core = [](const RunCoreConfig& o) -> double { return o.spectrum.dim; }},
      {.path = "sketch_rows",
       .default_value = [](const v1::RunConfig& c) -> ConfigValue {
         return static_cast<double>(
             std::min<uint32_t>(ControllerConfig{}.sketch_rows, c.sketch_dim()));
       },
       .formula = "min(64, sketch_dim)",
       .out_of_range = [](double v, const v1::RunConfig& c, const Limits& limits) -> ExpectedRange {
         if (v < 2 || v > c.sketch_dim() || v > limits.max_sketch_rows) {
           return absl::StrFormat("in [2, min(sketch_dim = %d, %d)]", c.sketch_dim(),
                                  limits.max_sketch_rows);
         }
         return std::nullopt;
       },
       .to_core =
           [](const v1::RunConfig& c, RunCoreConfig* o) {
             o->controller.sketch_rows = static_cast<int>(c.sketch_rows());
             o->spectrum.sketch_rows = static_cast<int>(c.sketch_rows());
           },
       .from_core = [](const RunCoreConfig& o) -> double { return o.controller.sketch_rows; }},

      // --- Window. ----------------------------------------------------------
      {.path = "window",
       .default_value = [](const v1::RunConfig&) -> ConfigValue {
         return V1Value(WindowOptions{}.kind);
       },
       .to_core =
           [](const v1::RunConfig& c, RunCoreConfig* o) {
             o->window.kind = c.window() == v1::WINDOW_KIND_FIXED ? WindowKind::kFixed
                                                                  : WindowKind::kExponential;
           },
       .from_core = [](const RunCoreConfig& o) { return V1Value(o.window.kind); }},
      {.path = "decay",
       .default_value = [](const v1::RunConfig&) -> ConfigValue { return WindowOptions{}.decay; },
       .out_of_range = [](double v, const v1::RunConfig&, const Limits&) -> ExpectedRange {
         if (!(v > 0.0 && v <= 1.0)) return "in (0, 1]";
         return std::nullopt;
       },
       .to_core = [](const v1::RunConfig& c, RunCoreConfig* o) { o->window.decay = c.decay(); },
       .from_core = [](const RunCoreConfig& o) { return o.window.decay; }},
      {.path = "window_steps",
       .default_value = [](const v1::RunConfig&) -> ConfigValue {
         return static_cast<double>(WindowOptions{}.window_steps);
       },
       .out_of_range = [](double v, const v1::RunConfig&, const Limits&) -> ExpectedRange {
         if (v > static_cast<double>(uint64_t{1} << 32)) return "in [1, 2^32]";
         return std::nullopt;
       },
       .to_core = [](const v1::RunConfig& c,
                     RunCoreConfig* o) { o->window.window_steps = c.window_steps(); },
       .from_core = [](const RunCoreConfig& o) -> double {
         return static_cast<double>(o.window.window_steps);
       }},

      // --- Server-side run settings (no core struct holds them). -----------
      {.path = "eval_every",
       .default_value = [](const v1::RunConfig&) -> ConfigValue { return 10.0; },
       .out_of_range = [](double v, const v1::RunConfig&, const Limits&) -> ExpectedRange {
         if (v > 1000000) return "in [1, 1000000]";
         return std::nullopt;
       }},
      {.path = "world_size",
       .default_value = [](const v1::RunConfig&) -> ConfigValue { return 1.0; },
       .out_of_range = [](double v, const v1::RunConfig&, const Limits& limits) -> ExpectedRange {
         if (v > limits.max_world_size) {
           return absl::StrFormat("in [1, %d] (server limit)", limits.max_world_size);
         }
         return std::nullopt;
       }},

      // --- Schedule. ---------------------------------------------------------
      {.path = "steps_per_epoch",
       .default_value = [](const v1::RunConfig& c) -> ConfigValue {
         return static_cast<double>(std::max<uint64_t>(1, c.total_steps() / 10));
       },
       .formula = "total_steps / 10",
       .to_core = [](const v1::RunConfig& c,
                     RunCoreConfig* o) { o->controller.steps_per_epoch = c.steps_per_epoch(); },
       .from_core = [](const RunCoreConfig& o) -> double {
         return static_cast<double>(o.controller.steps_per_epoch);
       }},
      {.path = "base_lr",
       .rule = DefaultRule::kIfUnset,
       .default_value = [](const v1::RunConfig& c) -> ConfigValue { return c.peak_lr() / 10.0; },
       .formula = "peak_lr / 10",
       .to_core = [](const v1::RunConfig& c,
                     RunCoreConfig* o) { o->controller.base_lr = c.base_lr(); },
       .from_core = [](const RunCoreConfig& o) { return o.controller.base_lr; }},
      {.path = "mode",
       .default_value = [](const v1::RunConfig&) -> ConfigValue {
         return static_cast<double>(v1::MODE_CONTROL);
       }},

      // --- PhaseConfig: ControllerConfig's thresholds. -----------------------
      {.path = "phase.warmup_fraction",
       .default_value = [](const v1::RunConfig&) -> ConfigValue {
         return ControllerConfig{}.warmup_fraction;
       },
       .to_core =
           [](const v1::RunConfig& c, RunCoreConfig* o) {
             o->controller.warmup_fraction = c.phase().warmup_fraction();
           },
       .from_core = [](const RunCoreConfig& o) { return o.controller.warmup_fraction; }},
      {.path = "phase.id_drop_threshold",
       .default_value = [](const v1::RunConfig&) -> ConfigValue {
         return ControllerConfig{}.id_drop_threshold;
       },
       .to_core =
           [](const v1::RunConfig& c, RunCoreConfig* o) {
             o->controller.id_drop_threshold = c.phase().id_drop_threshold();
           },
       .from_core = [](const RunCoreConfig& o) { return o.controller.id_drop_threshold; }},
      {.path = "phase.rank_fraction_max",
       .default_value = [](const v1::RunConfig&) -> ConfigValue {
         return ControllerConfig{}.rank_fraction_max;
       },
       .to_core =
           [](const v1::RunConfig& c, RunCoreConfig* o) {
             o->controller.rank_fraction_max = c.phase().rank_fraction_max();
           },
       .from_core = [](const RunCoreConfig& o) { return o.controller.rank_fraction_max; }},
      {.path = "phase.plateau_epsilon",
       .default_value = [](const v1::RunConfig&) -> ConfigValue {
         return ControllerConfig{}.plateau_epsilon;
       },
       .to_core =
           [](const v1::RunConfig& c, RunCoreConfig* o) {
             o->controller.plateau_epsilon = c.phase().plateau_epsilon();
           },
       .from_core = [](const RunCoreConfig& o) { return o.controller.plateau_epsilon; }},
      {.path = "phase.window_evals",
       .default_value = [](const v1::RunConfig&) -> ConfigValue {
         return static_cast<double>(ControllerConfig{}.window_evals);
       },
       .to_core =
           [](const v1::RunConfig& c, RunCoreConfig* o) {
             o->controller.window_evals = ClampedInt(c.phase().window_evals());
           },
       .from_core = [](const RunCoreConfig& o) -> double { return o.controller.window_evals; }},
      {.path = "phase.loss_decrease_min",
       .default_value = [](const v1::RunConfig&) -> ConfigValue {
         return ControllerConfig{}.loss_decrease_min;
       },
       .to_core =
           [](const v1::RunConfig& c, RunCoreConfig* o) {
             o->controller.loss_decrease_min = c.phase().loss_decrease_min();
           },
       .from_core = [](const RunCoreConfig& o) { return o.controller.loss_decrease_min; }},
      {.path = "phase.confirm_evals",
       .default_value = [](const v1::RunConfig&) -> ConfigValue {
         return static_cast<double>(ControllerConfig{}.confirm_evals);
       },
       .to_core =
           [](const v1::RunConfig& c, RunCoreConfig* o) {
             o->controller.confirm_evals = ClampedInt(c.phase().confirm_evals());
           },
       .from_core = [](const RunCoreConfig& o) -> double { return o.controller.confirm_evals; }},
      {.path = "phase.hysteresis",
       .default_value = [](const v1::RunConfig&) -> ConfigValue {
         return ControllerConfig{}.hysteresis;
       },
       .to_core = [](const v1::RunConfig& c,
                     RunCoreConfig* o) { o->controller.hysteresis = c.phase().hysteresis(); },
       .from_core = [](const RunCoreConfig& o) { return o.controller.hysteresis; },
       .added_later = true},
      {.path = "phase.plateau_windows",
       .default_value = [](const v1::RunConfig&) -> ConfigValue {
         return static_cast<double>(ControllerConfig{}.plateau_windows);
       },
       .to_core =
           [](const v1::RunConfig& c, RunCoreConfig* o) {
             o->controller.plateau_windows = ClampedInt(c.phase().plateau_windows());
           },
       .from_core = [](const RunCoreConfig& o) -> double { return o.controller.plateau_windows; },
       .added_later = true},
      {.path = "phase.min_dwell_steps",
       .default_value = [](const v1::RunConfig& c) -> ConfigValue {
         return static_cast<double>(std::max<uint64_t>(1, c.total_steps() / 20));
       },
       .formula = "5% of total_steps",
       .to_core =
           [](const v1::RunConfig& c, RunCoreConfig* o) {
             o->controller.min_dwell_steps = c.phase().min_dwell_steps();
           },
       .from_core = [](const RunCoreConfig& o) -> double {
         return static_cast<double>(o.controller.min_dwell_steps);
       }},
      {.path = "phase.lr_cut",
       .default_value = [](const v1::RunConfig&) -> ConfigValue {
         return ControllerConfig{}.lr_cut;
       },
       .to_core = [](const v1::RunConfig& c,
                     RunCoreConfig* o) { o->controller.lr_cut = c.phase().lr_cut(); },
       .from_core = [](const RunCoreConfig& o) { return o.controller.lr_cut; }},
      {.path = "phase.refine_loss_rate_min",
       .default_value = [](const v1::RunConfig&) -> ConfigValue {
         return ControllerConfig{}.refine_loss_rate_min;
       },
       .to_core =
           [](const v1::RunConfig& c, RunCoreConfig* o) {
             o->controller.refine_loss_rate_min = c.phase().refine_loss_rate_min();
           },
       .from_core = [](const RunCoreConfig& o) { return o.controller.refine_loss_rate_min; }},
      {.path = "phase.refine_budget_fraction",
       .default_value = [](const v1::RunConfig&) -> ConfigValue {
         return ControllerConfig{}.refine_budget_fraction;
       },
       .to_core =
           [](const v1::RunConfig& c, RunCoreConfig* o) {
             o->controller.refine_budget_fraction = c.phase().refine_budget_fraction();
           },
       .from_core = [](const RunCoreConfig& o) { return o.controller.refine_budget_fraction; }},
      {.path = "phase.lr_min",
       .rule = DefaultRule::kIfUnset,
       .default_value = [](const v1::RunConfig& c) -> ConfigValue { return c.peak_lr() / 100.0; },
       .formula = "peak_lr / 100",
       .to_core = [](const v1::RunConfig& c,
                     RunCoreConfig* o) { o->controller.lr_min = c.phase().lr_min(); },
       .from_core = [](const RunCoreConfig& o) { return o.controller.lr_min; }},
      {.path = "phase.val_patience",
       .default_value = [](const v1::RunConfig&) -> ConfigValue {
         return static_cast<double>(ControllerConfig{}.val_patience);
       },
       .to_core =
           [](const v1::RunConfig& c, RunCoreConfig* o) {
             o->controller.val_patience = ClampedInt(c.phase().val_patience());
           },
       .from_core = [](const RunCoreConfig& o) -> double { return o.controller.val_patience; }},
      {.path = "phase.val_min_delta",
       .default_value = [](const v1::RunConfig&) -> ConfigValue {
         return ControllerConfig{}.val_min_delta;
       },
       .to_core = [](const v1::RunConfig& c,
                     RunCoreConfig* o) { o->controller.val_min_delta = c.phase().val_min_delta(); },
       .from_core = [](const RunCoreConfig& o) { return o.controller.val_min_delta; }},
      {.path = "phase.val_metric",  // the run matches it against EvalReport names
       .default_value = [](const v1::RunConfig&) -> ConfigValue { return "val_loss"; }},
      {.path = "phase.val_goal",
       .default_value = [](const v1::RunConfig&) -> ConfigValue {
         return static_cast<double>(ControllerConfig{}.val_maximize ? v1::METRIC_GOAL_MAXIMIZE
                                                                    : v1::METRIC_GOAL_MINIMIZE);
       },
       .to_core =
           [](const v1::RunConfig& c, RunCoreConfig* o) {
             o->controller.val_maximize = c.phase().val_goal() == v1::METRIC_GOAL_MAXIMIZE;
           },
       .from_core = [](const RunCoreConfig& o) -> double {
         return o.controller.val_maximize ? v1::METRIC_GOAL_MAXIMIZE : v1::METRIC_GOAL_MINIMIZE;
       }},
      {.path = "phase.kfac_damping",
       .default_value = [](const v1::RunConfig&) -> ConfigValue {
         return ControllerConfig{}.kfac_damping;
       },
       .to_core = [](const v1::RunConfig& c,
                     RunCoreConfig* o) { o->controller.kfac_damping = c.phase().kfac_damping(); },
       .from_core = [](const RunCoreConfig& o) { return o.controller.kfac_damping; }},
      {.path = "phase.kfac_factor_interval",
       .default_value = [](const v1::RunConfig&) -> ConfigValue {
         return static_cast<double>(ControllerConfig{}.kfac_factor_interval);
       },
       .to_core =
           [](const v1::RunConfig& c, RunCoreConfig* o) {
             o->controller.kfac_factor_interval = c.phase().kfac_factor_interval();
           },
       .from_core = [](const RunCoreConfig& o) -> double {
         return o.controller.kfac_factor_interval;
       }},
      {.path = "phase.kfac_inverse_interval",
       .default_value = [](const v1::RunConfig&) -> ConfigValue {
         return static_cast<double>(ControllerConfig{}.kfac_inverse_interval);
       },
       .to_core =
           [](const v1::RunConfig& c, RunCoreConfig* o) {
             o->controller.kfac_inverse_interval = c.phase().kfac_inverse_interval();
           },
       .from_core = [](const RunCoreConfig& o) -> double {
         return o.controller.kfac_inverse_interval;
       }},
      {.path = "phase.noise_std",  // the default is "none", 0
       .default_value = [](const v1::RunConfig&) -> ConfigValue {
         return ControllerConfig{}.noise_std;
       },
       .to_core = [](const v1::RunConfig& c,
                     RunCoreConfig* o) { o->controller.noise_std = c.phase().noise_std(); },
       .from_core = [](const RunCoreConfig& o) { return o.controller.noise_std; }},
      {.path = "phase.delivery_budget_seconds",  // the run's directive placement reads it
       .default_value = [](const v1::RunConfig&) -> ConfigValue { return 2.0; },
       .out_of_range = [](double v, const v1::RunConfig&, const Limits&) -> ExpectedRange {
         if (!(v > 0.0 && v <= 3600.0)) return "in (0, 3600]";
         return std::nullopt;
       }},
      {.path = "phase.divergence_loss_rate",
       .default_value = [](const v1::RunConfig&) -> ConfigValue {
         return ControllerConfig{}.divergence_loss_rate;
       },
       .to_core =
           [](const v1::RunConfig& c, RunCoreConfig* o) {
             o->controller.divergence_loss_rate = c.phase().divergence_loss_rate();
           },
       .from_core = [](const RunCoreConfig& o) { return o.controller.divergence_loss_rate; },
       .added_later = true},
      // The guarded switch (docs/PHASES.md). Its window scales with the run
      // like the dwell; an explicit 0 turns the guard (and the trainers'
      // snapshot) off.
      {.path = "phase.rollback_window_steps",
       .rule = DefaultRule::kIfUnset,
       .default_value = [](const v1::RunConfig& c) -> ConfigValue {
         return static_cast<double>(std::max<uint64_t>(1, c.total_steps() / 20));
       },
       .formula = "5% of total_steps",
       .to_core =
           [](const v1::RunConfig& c, RunCoreConfig* o) {
             o->controller.rollback_window_steps = c.phase().rollback_window_steps();
           },
       .from_core = [](const RunCoreConfig& o) -> double {
         return static_cast<double>(o.controller.rollback_window_steps);
       },
       .added_later = true},
      {.path = "phase.rollback_loss_margin",
       .default_value = [](const v1::RunConfig&) -> ConfigValue {
         return ControllerConfig{}.rollback_loss_margin;
       },
       .to_core =
           [](const v1::RunConfig& c, RunCoreConfig* o) {
             o->controller.rollback_loss_margin = c.phase().rollback_loss_margin();
           },
       .from_core = [](const RunCoreConfig& o) { return o.controller.rollback_loss_margin; },
       .added_later = true},
      {.path = "phase.rollback_lr_factor",
       .default_value = [](const v1::RunConfig&) -> ConfigValue {
         return ControllerConfig{}.rollback_lr_factor;
       },
       .to_core =
           [](const v1::RunConfig& c, RunCoreConfig* o) {
             o->controller.rollback_lr_factor = c.phase().rollback_lr_factor();
           },
       .from_core = [](const RunCoreConfig& o) { return o.controller.rollback_lr_factor; },
       .added_later = true},
      {.path = "phase.rollback_max_retries",
       .rule = DefaultRule::kIfUnset,
       .default_value = [](const v1::RunConfig&) -> ConfigValue {
         return static_cast<double>(ControllerConfig{}.rollback_max_retries);
       },
       .to_core =
           [](const v1::RunConfig& c, RunCoreConfig* o) {
             o->controller.rollback_max_retries = ClampedInt(c.phase().rollback_max_retries());
           },
       .from_core = [](const RunCoreConfig& o) -> double {
         return o.controller.rollback_max_retries;
       },
       .added_later = true},
      {.path = "phase.retry_plateau_factor",
       .default_value = [](const v1::RunConfig&) -> ConfigValue {
         return ControllerConfig{}.retry_plateau_factor;
       },
       .to_core =
           [](const v1::RunConfig& c, RunCoreConfig* o) {
             o->controller.retry_plateau_factor = c.phase().retry_plateau_factor();
           },
       .from_core = [](const RunCoreConfig& o) { return o.controller.retry_plateau_factor; },
       .added_later = true},
      {.path = "phase.retry_damping_factor",
       .default_value = [](const v1::RunConfig&) -> ConfigValue {
         return ControllerConfig{}.retry_damping_factor;
       },
       .to_core =
           [](const v1::RunConfig& c, RunCoreConfig* o) {
             o->controller.retry_damping_factor = c.phase().retry_damping_factor();
           },
       .from_core = [](const RunCoreConfig& o) { return o.controller.retry_damping_factor; },
       .added_later = true},
  };
}

#pragma GCC diagnostic pop

}  // namespace spotter
