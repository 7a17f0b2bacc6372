// Reads typed values from a fuzzer's input, never past its end (missing bytes
// read as zero), so that every input is a valid sequence of choices.
#ifndef SPOTTER_TESTS_FUZZ_FUZZ_INPUT_H_
#define SPOTTER_TESTS_FUZZ_FUZZ_INPUT_H_

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

namespace spotter::fuzz {

class FuzzInput {
 public:
  FuzzInput(const uint8_t* data, size_t size) : data_(data), size_(size) {}

  bool empty() const { return pos_ >= size_; }
  size_t remaining() const { return empty() ? 0 : size_ - pos_; }

  template <typename T>
  T Raw() {
    T v{};
    const size_t n = sizeof(T) < remaining() ? sizeof(T) : remaining();
    if (n > 0) std::memcpy(&v, data_ + pos_, n);
    pos_ += sizeof(T);
    return v;
  }
  uint8_t U8() { return Raw<uint8_t>(); }
  uint32_t U32() { return Raw<uint32_t>(); }
  uint64_t U64() { return Raw<uint64_t>(); }
  double F64() { return Raw<double>(); }
  float F32() { return Raw<float>(); }
  // An integer in [lo, hi].
  uint64_t InRange(uint64_t lo, uint64_t hi) {
    return hi <= lo ? lo : lo + U64() % (hi - lo + 1);
  }
  // A double in [0, 1].
  double Unit() { return static_cast<double>(U32()) / 4294967295.0; }
  // `n` bytes (fewer at the end of the input).
  std::string Bytes(size_t n) {
    n = n < remaining() ? n : remaining();
    std::string s(reinterpret_cast<const char*>(data_ + pos_), n);
    pos_ += n;
    return s;
  }
  // A length-prefixed (u16) chunk.
  std::string Chunk() { return Bytes(Raw<uint16_t>()); }
  std::string Rest() { return Bytes(remaining()); }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

}  // namespace spotter::fuzz

#endif  // SPOTTER_TESTS_FUZZ_FUZZ_INPUT_H_
