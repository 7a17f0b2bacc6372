#include "server/runs/rejection.h"

#include <cmath>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/cord.h"
#include "absl/strings/str_format.h"

namespace spotter {
namespace {

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
    case v1::REJECT_REASON_MALFORMED:
      return "malformed";
    case v1::REJECT_REASON_DIM_MISMATCH:
      return "dim_mismatch";
    case v1::REJECT_REASON_NON_FINITE:
      return "non_finite";
    case v1::REJECT_REASON_TOO_LARGE:
      return "too_large";
    case v1::REJECT_REASON_EMPTY:
      return "empty";
    case v1::REJECT_REASON_STEP_BACKWARDS:
      return "step_backwards";
    case v1::REJECT_REASON_SEQ_NOT_INCREASING:
      return "seq_not_increasing";
    case v1::REJECT_REASON_UNSUPPORTED_ENCODING:
      return "unsupported_encoding";
    case v1::REJECT_REASON_RUN_FINISHED:
      return "run_finished";
    case v1::REJECT_REASON_NO_HELLO:
      return "no_hello";
    case v1::REJECT_REASON_BAD_METRIC:
      return "bad_metric";
    case v1::REJECT_REASON_DENORMAL:
      return "denormal";
    case v1::REJECT_REASON_SUPERSEDED:
      return "superseded";
    default:
      return "unspecified";
  }
}

std::optional<Rejection> DecodeSketch(const v1::SketchBatch& b, uint32_t k, const Limits& limits,
                                      RowMatrixXf* out) {
  if (b.rows() == 0) {
    return Rejection{v1::REJECT_REASON_EMPTY, "sketch batch has 0 rows; expected >= 1"};
  }
  if (b.cols() != k) {
    return Rejection{
        v1::REJECT_REASON_DIM_MISMATCH,
        absl::StrFormat("sketch batch has %d columns; the run's sketch_dim is %d", b.cols(), k)};
  }
  if (b.rows() > limits.max_batch_rows) {
    return Rejection{v1::REJECT_REASON_TOO_LARGE,
                     absl::StrFormat("sketch batch has %d rows; the server accepts at most %d",
                                     b.rows(), limits.max_batch_rows)};
  }
  size_t width;
  switch (b.encoding()) {
    case v1::ENCODING_UNSPECIFIED:
    case v1::ENCODING_FLOAT32:
      width = 4;
      break;
    case v1::ENCODING_FLOAT16:
    case v1::ENCODING_BFLOAT16:
      width = 2;
      break;
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
  // NaN means "not given" for both (the clients' default); infinities are
  // never a loss or a learning rate.
  if (std::isinf(b.loss()) || std::isinf(b.lr())) {
    return Rejection{v1::REJECT_REASON_NON_FINITE,
                     absl::StrFormat("loss = %g, lr = %g: expected finite values, or NaN for "
                                     "not given",
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
                       absl::StrFormat("value %g at row %d col %d; every value must be finite", v,
                                       i / b.cols(), i % b.cols())};
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

}  // namespace spotter
