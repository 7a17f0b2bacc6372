// Little-endian fixed-width byte encoding for checkpoints of core state
// (core/spectrum/accumulator_codec.h, core/phase/controller_codec.h). The writer
// appends; the reader is bounds-checked and never reads past its input: every
// Read* returns false (and leaves the reader failed) on a short input.
#ifndef SPOTTER_CORE_UTIL_BYTE_IO_H_
#define SPOTTER_CORE_UTIL_BYTE_IO_H_

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace spotter {

// Not thread-safe. Values are written in the host's byte order, which must be
// little-endian (x86-64 and arm64; static_assert below).
class ByteWriter {
 public:
  void U8(uint8_t v) { Raw(&v, 1); }
  void U32(uint32_t v) { Raw(&v, 4); }
  void U64(uint64_t v) { Raw(&v, 8); }
  void I32(int32_t v) { Raw(&v, 4); }
  void I64(int64_t v) { Raw(&v, 8); }
  void F64(double v) { Raw(&v, 8); }
  void Floats(const float* v, size_t n) { Raw(v, n * sizeof(float)); }
  void Raw(const void* p, size_t n) { out_.append(static_cast<const char*>(p), n); }

  const std::string& bytes() const { return out_; }
  std::string Take() { return std::move(out_); }

 private:
  std::string out_;
};

// Not thread-safe. Reads from a view that must outlive the reader.
class ByteReader {
 public:
  explicit ByteReader(std::string_view in) : in_(in) {}

  bool U8(uint8_t* v) { return Raw(v, 1); }
  bool U32(uint32_t* v) { return Raw(v, 4); }
  bool U64(uint64_t* v) { return Raw(v, 8); }
  bool I32(int32_t* v) { return Raw(v, 4); }
  bool I64(int64_t* v) { return Raw(v, 8); }
  bool F64(double* v) { return Raw(v, 8); }
  bool Bool(bool* v) {
    uint8_t b = 0;
    if (!U8(&b) || b > 1) return Fail();
    *v = b == 1;
    return true;
  }
  bool Floats(float* v, size_t n) {
    if (n > remaining() / sizeof(float)) return Fail();
    return Raw(v, n * sizeof(float));
  }
  bool Raw(void* p, size_t n) {
    if (failed_ || n > remaining()) return Fail();
    std::memcpy(p, in_.data() + pos_, n);
    pos_ += n;
    return true;
  }

  size_t remaining() const { return in_.size() - pos_; }
  bool failed() const { return failed_; }
  // True when every byte was consumed and no read failed.
  bool done() const { return !failed_ && pos_ == in_.size(); }

 private:
  bool Fail() {
    failed_ = true;
    return false;
  }
  std::string_view in_;
  size_t pos_ = 0;
  bool failed_ = false;
};

static_assert(sizeof(float) == 4 && sizeof(double) == 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "spotter checkpoints assume a little-endian host"
#endif

}  // namespace spotter

#endif  // SPOTTER_CORE_UTIL_BYTE_IO_H_
