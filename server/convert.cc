#include "server/convert.h"

#include <cmath>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/cord.h"
#include "absl/strings/str_format.h"
#include "core/util/status_macros.h"
#include "google/protobuf/util/message_differencer.h"

namespace spotter {
namespace {

absl::Status OutOfRange(const char* field, double value, const std::string& range) {
  return absl::InvalidArgumentError(
      absl::StrFormat("config.%s = %g is out of range: expected %s", field, value, range));
}

// Sets a scalar proto field to `value` when it is at its zero default.
#define SPOTTER_DEFAULT(msg, field, value) \
  if ((msg)->field() == decltype((msg)->field()){}) (msg)->set_##field(value)

float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ff;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal half: normalise
      exp = 127 - 15 + 1;
      while ((mant & 0x400) == 0) {
        mant <<= 1;
        --exp;
      }
      mant &= 0x3ff;
      bits = sign | (exp << 23) | (mant << 13);
    }
  } else if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

}  // namespace

absl::Status ValidateRunName(const std::string& name) {
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

absl::StatusOr<v1::RunConfig> ResolveRunConfig(const v1::RunConfig& in,
                                               const Limits& limits) {
  v1::RunConfig c = in;
  // Enums first: unknown values are rejected, not defaulted.
  if (!v1::ProjectionKind_IsValid(c.projection().kind())) {
    return OutOfRange("projection.kind", c.projection().kind(), "a ProjectionKind value");
  }
  if (!v1::WindowKind_IsValid(c.window())) return OutOfRange("window", c.window(), "a WindowKind value");
  if (!v1::Mode_IsValid(c.mode())) return OutOfRange("mode", c.mode(), "a Mode value");
  if (!v1::MetricGoal_IsValid(c.phase().val_goal())) {
    return OutOfRange("phase.val_goal", c.phase().val_goal(), "a MetricGoal value");
  }

  if (c.total_steps() == 0) return OutOfRange("total_steps", 0, "> 0 (required)");
  if (c.total_steps() > (uint64_t{1} << 40)) {
    return OutOfRange("total_steps", static_cast<double>(c.total_steps()), "<= 2^40");
  }
  if (!(c.peak_lr() > 0.0) || !std::isfinite(c.peak_lr())) {
    return OutOfRange("peak_lr", c.peak_lr(), "a finite value > 0 (required)");
  }
  SPOTTER_DEFAULT(c.mutable_projection(), kind, v1::PROJECTION_KIND_COUNT_SKETCH);
  if (c.sketch_dim() == 0) c.set_sketch_dim(256);
  if (c.sketch_dim() < 2 || c.sketch_dim() > limits.max_sketch_dim) {
    return OutOfRange("sketch_dim", c.sketch_dim(),
                      absl::StrFormat("in [2, %d] (server limit)", limits.max_sketch_dim));
  }
  if (c.sketch_rows() == 0) c.set_sketch_rows(std::min<uint32_t>(64, c.sketch_dim()));
  if (c.sketch_rows() < 2 || c.sketch_rows() > c.sketch_dim() ||
      c.sketch_rows() > limits.max_sketch_rows) {
    return OutOfRange("sketch_rows", c.sketch_rows(),
                      absl::StrFormat("in [2, min(sketch_dim = %d, %d)]", c.sketch_dim(),
                                      limits.max_sketch_rows));
  }
  if (c.window() == v1::WINDOW_KIND_UNSPECIFIED) c.set_window(v1::WINDOW_KIND_EXPONENTIAL);
  if (c.decay() == 0.0) c.set_decay(0.99);
  if (!(c.decay() > 0.0 && c.decay() <= 1.0)) return OutOfRange("decay", c.decay(), "in (0, 1]");
  if (c.window_steps() == 0) c.set_window_steps(200);
  if (c.window_steps() > (uint64_t{1} << 32)) {
    return OutOfRange("window_steps", static_cast<double>(c.window_steps()), "in [1, 2^32]");
  }
  if (c.eval_every() == 0) c.set_eval_every(10);
  if (c.eval_every() > 1000000) return OutOfRange("eval_every", c.eval_every(), "in [1, 1000000]");
  if (c.world_size() == 0) c.set_world_size(1);
  if (c.world_size() > limits.max_world_size) {
    return OutOfRange("world_size", c.world_size(),
                      absl::StrFormat("in [1, %d] (server limit)", limits.max_world_size));
  }
  if (c.steps_per_epoch() == 0) c.set_steps_per_epoch(std::max<uint64_t>(1, c.total_steps() / 10));
  if (!c.has_base_lr()) c.set_base_lr(c.peak_lr() / 10.0);
  if (c.mode() == v1::MODE_UNSPECIFIED) c.set_mode(v1::MODE_CONTROL);

  v1::PhaseConfig* p = c.mutable_phase();
  SPOTTER_DEFAULT(p, warmup_fraction, 0.15);
  SPOTTER_DEFAULT(p, id_drop_threshold, 0.05);
  SPOTTER_DEFAULT(p, rank_fraction_max, 0.2);
  SPOTTER_DEFAULT(p, plateau_epsilon, 0.1);
  SPOTTER_DEFAULT(p, window_evals, 5u);
  SPOTTER_DEFAULT(p, loss_decrease_min, 0.01);
  SPOTTER_DEFAULT(p, confirm_evals, 3u);
  SPOTTER_DEFAULT(p, hysteresis, ControllerConfig{}.hysteresis);
  SPOTTER_DEFAULT(p, min_dwell_steps, std::max<uint64_t>(1, c.total_steps() / 20));
  SPOTTER_DEFAULT(p, lr_cut, 0.5);
  SPOTTER_DEFAULT(p, refine_loss_rate_min, 0.02);
  SPOTTER_DEFAULT(p, refine_budget_fraction, 0.75);
  if (!p->has_lr_min()) p->set_lr_min(c.peak_lr() / 100.0);
  SPOTTER_DEFAULT(p, val_patience, 5u);
  SPOTTER_DEFAULT(p, val_min_delta, 1e-4);
  if (p->val_metric().empty()) p->set_val_metric("val_loss");
  if (p->val_goal() == v1::METRIC_GOAL_UNSPECIFIED) p->set_val_goal(v1::METRIC_GOAL_MINIMIZE);
  SPOTTER_DEFAULT(p, kfac_damping, 1e-3);
  SPOTTER_DEFAULT(p, kfac_factor_interval, 10u);
  SPOTTER_DEFAULT(p, kfac_inverse_interval, 100u);
  SPOTTER_DEFAULT(p, delivery_budget_seconds, 2.0);
  if (!(p->delivery_budget_seconds() > 0.0 && p->delivery_budget_seconds() <= 3600.0)) {
    return OutOfRange("phase.delivery_budget_seconds", p->delivery_budget_seconds(),
                      "in (0, 3600]");
  }
  const absl::Status s = ToControllerConfig(c).Validate();
  if (!s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("config.", s.message()));
  }
  return c;
}

std::string ConfigDifference(const v1::RunConfig& a, const v1::RunConfig& b) {
  v1::RunConfig x = a, y = b;
  x.clear_labels();
  y.clear_labels();
  std::string diff;
  google::protobuf::util::MessageDifferencer d;
  d.ReportDifferencesToString(&diff);
  if (d.Compare(x, y)) return "";
  return diff.empty() ? "configs differ" : diff;
}

ControllerConfig ToControllerConfig(const v1::RunConfig& c) {
  const v1::PhaseConfig& p = c.phase();
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
  o.window_evals = static_cast<int>(std::min<uint32_t>(p.window_evals(), 1u << 30));
  o.loss_decrease_min = p.loss_decrease_min();
  o.confirm_evals = static_cast<int>(std::min<uint32_t>(p.confirm_evals(), 1u << 30));
  o.hysteresis = p.hysteresis();
  o.min_dwell_steps = p.min_dwell_steps();
  o.lr_cut = p.lr_cut();
  o.refine_loss_rate_min = p.refine_loss_rate_min();
  o.refine_budget_fraction = p.refine_budget_fraction();
  o.lr_min = p.lr_min();
  o.val_patience = static_cast<int>(std::min<uint32_t>(p.val_patience(), 1u << 30));
  o.val_min_delta = p.val_min_delta();
  o.val_maximize = p.val_goal() == v1::METRIC_GOAL_MAXIMIZE;
  o.kfac_damping = p.kfac_damping();
  o.kfac_factor_interval = p.kfac_factor_interval();
  o.kfac_inverse_interval = p.kfac_inverse_interval();
  o.noise_std = p.noise_std();
  return o;
}

WindowOptions ToWindowOptions(const v1::RunConfig& c) {
  WindowOptions w;
  w.kind = c.window() == v1::WINDOW_KIND_FIXED ? WindowKind::kFixed : WindowKind::kExponential;
  w.decay = c.decay();
  w.window_steps = c.window_steps();
  return w;
}

ProjectionKind ToProjectionKind(v1::ProjectionKind kind) {
  return kind == v1::PROJECTION_KIND_GAUSSIAN ? ProjectionKind::kGaussian
                                              : ProjectionKind::kCountSketch;
}

SpectrumOptions ToSpectrumOptions(const v1::RunConfig& c) {
  SpectrumOptions o;
  o.sketch_rows = static_cast<int>(c.sketch_rows());
  o.dim = static_cast<int>(c.sketch_dim());
  o.projection = ToProjectionKind(c.projection().kind());
  return o;
}

namespace {
constexpr char kReasonPayload[] = "type.spotter.dev/reject-reason";
}  // namespace

absl::Status WithReason(absl::Status status, absl::string_view reason) {
  if (!status.ok()) status.SetPayload(kReasonPayload, absl::Cord(reason));
  return status;
}

std::string ReasonLabel(const absl::Status& status) {
  if (auto p = status.GetPayload(kReasonPayload)) return std::string(*p);
  return absl::AsciiStrToLower(absl::StatusCodeToString(status.code()));
}

const char* RejectReasonLabel(v1::RejectReason reason) {
  switch (reason) {
    case v1::REJECT_REASON_MALFORMED: return "malformed";
    case v1::REJECT_REASON_DIM_MISMATCH: return "dim_mismatch";
    case v1::REJECT_REASON_NON_FINITE: return "non_finite";
    case v1::REJECT_REASON_TOO_LARGE: return "too_large";
    case v1::REJECT_REASON_EMPTY: return "empty";
    case v1::REJECT_REASON_STEP_BACKWARDS: return "step_backwards";
    case v1::REJECT_REASON_SEQ_NOT_INCREASING: return "seq_not_increasing";
    case v1::REJECT_REASON_UNSUPPORTED_ENCODING: return "unsupported_encoding";
    case v1::REJECT_REASON_RUN_FINISHED: return "run_finished";
    case v1::REJECT_REASON_NO_HELLO: return "no_hello";
    case v1::REJECT_REASON_BAD_METRIC: return "bad_metric";
    case v1::REJECT_REASON_DENORMAL: return "denormal";
    default: return "unspecified";
  }
}

std::optional<Rejection> DecodeSketch(const v1::SketchBatch& b, uint32_t k,
                                      const Limits& limits, RowMatrixXf* out) {
  if (b.rows() == 0) {
    return Rejection{v1::REJECT_REASON_EMPTY, "sketch batch has 0 rows; expected >= 1"};
  }
  if (b.cols() != k) {
    return Rejection{v1::REJECT_REASON_DIM_MISMATCH,
                     absl::StrFormat("sketch batch has %d columns; the run's sketch_dim is %d",
                                     b.cols(), k)};
  }
  if (b.rows() > limits.max_batch_rows) {
    return Rejection{v1::REJECT_REASON_TOO_LARGE,
                     absl::StrFormat("sketch batch has %d rows; the server accepts at most %d",
                                     b.rows(), limits.max_batch_rows)};
  }
  size_t width;
  switch (b.encoding()) {
    case v1::ENCODING_UNSPECIFIED:
    case v1::ENCODING_FLOAT32: width = 4; break;
    case v1::ENCODING_FLOAT16:
    case v1::ENCODING_BFLOAT16: width = 2; break;
    default:
      return Rejection{v1::REJECT_REASON_UNSUPPORTED_ENCODING,
                       absl::StrFormat("encoding %d is not supported; expected FLOAT32, "
                                       "FLOAT16 or BFLOAT16",
                                       static_cast<int>(b.encoding()))};
  }
  const size_t n = static_cast<size_t>(b.rows()) * b.cols();
  if (b.data().size() != n * width) {
    return Rejection{v1::REJECT_REASON_MALFORMED,
                     absl::StrFormat("data has %d bytes; %d rows x %d cols of %d-byte values "
                                     "need %d",
                                     b.data().size(), b.rows(), b.cols(), width, n * width)};
  }
  if (std::isinf(b.loss()) || std::isinf(b.lr()) || std::isnan(b.lr())) {
    return Rejection{v1::REJECT_REASON_NON_FINITE,
                     absl::StrFormat("loss = %g, lr = %g: expected a finite lr and a finite "
                                     "loss (NaN loss means not given)",
                                     b.loss(), b.lr())};
  }
  out->resize(b.rows(), b.cols());
  float* dst = out->data();
  const char* src = b.data().data();
  if (width == 4) {
    std::memcpy(dst, src, n * 4);  // little-endian hosts only (x86-64, arm64)
  } else {
    for (size_t i = 0; i < n; ++i) {
      uint16_t h;
      std::memcpy(&h, src + 2 * i, 2);
      if (b.encoding() == v1::ENCODING_BFLOAT16) {
        const uint32_t bits = static_cast<uint32_t>(h) << 16;
        std::memcpy(dst + i, &bits, 4);
      } else {
        dst[i] = HalfToFloat(h);
      }
    }
  }
  size_t subnormal = 0;
  for (size_t i = 0; i < n; ++i) {
    const float v = dst[i];
    if (!std::isfinite(v)) {
      return Rejection{v1::REJECT_REASON_NON_FINITE,
                       absl::StrFormat("value %g at row %d col %d; every value must be finite",
                                       v, i / b.cols(), i % b.cols())};
    }
    if (std::fabs(v) > limits.max_abs_value) {
      return Rejection{v1::REJECT_REASON_TOO_LARGE,
                       absl::StrFormat("value %g at row %d col %d exceeds the server's limit "
                                       "|value| <= %g (--max_abs_value): it would overflow the "
                                       "float32 sketch",
                                       v, i / b.cols(), i % b.cols(), limits.max_abs_value),
                       "value_too_large"};
    }
    if (std::fpclassify(v) == FP_SUBNORMAL) {
      ++subnormal;
      dst[i] = 0.0f;  // flushed: they carry no signal and slow the math down
    }
  }
  if (subnormal * 2 > n) {
    return Rejection{v1::REJECT_REASON_DENORMAL,
                     absl::StrFormat("%d of %d values are subnormal floats; scale the "
                                     "gradients up (e.g. by the loss scale) before sketching",
                                     subnormal, n)};
  }
  return std::nullopt;
}

void ToProto(const Estimate& e, v1::Estimate* out) {
  out->set_value(e.value);
  out->set_lower(e.lower);
  out->set_upper(e.upper);
  out->set_censored(e.censored);
}

void ToProto(const SpectrumSummary& s, v1::SpectrumSummary* out) {
  out->set_trace(s.trace);
  ToProto(s.top_eigenvalue, out->mutable_top_eigenvalue());
  ToProto(s.effective_rank, out->mutable_effective_rank());
  ToProto(s.rank_fraction, out->mutable_rank_fraction());
  ToProto(s.participation_ratio, out->mutable_participation_ratio());
  out->set_participation_ratio_raw(s.participation_ratio_raw);
  ToProto(s.stable_rank, out->mutable_stable_rank());
  for (double v : s.eigenvalues) out->add_eigenvalues(v);
  out->set_eigenvalue_error(s.eigenvalue_error);
}

}  // namespace spotter
