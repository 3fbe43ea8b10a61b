// A binary adaptive range coder: bits coded with a probability a context model learns as it
// goes, and direct bits at one bit each (coded up to eight at a time). Delta format 4 (delta.hpp)
// codes float32 values with it.
//
// The coder keeps a 32-bit range and a 64-bit low end; bytes whose value a later carry could
// still change wait in `pending_` (the classic carry-propagating scheme). The stream's first
// byte is always 0 and is not written. Probabilities are 16-bit (the chance of a 0 bit, in
// 1/65536). A decoder reading past the end of its input reads zero bytes and says so through
// overrun(), so a truncated stream decodes to bounded garbage and is detected, never a crash.
//
// Thread-safety: one coder per thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace cairn::modelpkg::detail {

// Direct bits coded per step: the range is at least 2^24 between steps, so 2^8 parts of it are
// still at least 2^16 wide.
inline constexpr int kDirectStep = 8;

// The chance of a 0 bit learnt from the bits seen in one context: the Krichevsky–Trofimov
// estimate (counts plus one half), halved past kLimit so that it follows a drifting source.
class BitModel {
 public:
  std::uint32_t p0() const {
    const std::uint32_t p = ((2 * std::uint32_t{n0_} + 1) << 16) / (2 * (n0_ + n1_) + 2);
    return p < kMinP ? kMinP : p > 65536 - kMinP ? 65536 - kMinP : p;
  }
  void update(bool bit) {
    (bit ? n1_ : n0_)++;
    if (n0_ + n1_ > kLimit) {
      n0_ = static_cast<std::uint16_t>((n0_ + 1) / 2);
      n1_ = static_cast<std::uint16_t>((n1_ + 1) / 2);
    }
  }

 private:
  static constexpr std::uint32_t kMinP = 32;
  static constexpr std::uint32_t kLimit = 1024;
  std::uint16_t n0_ = 0, n1_ = 0;
};

class RangeEncoder {
 public:
  void encode(BitModel& model, bool bit) {
    const std::uint32_t bound = (range_ >> 16) * model.p0();
    if (bit) {
      low_ += bound;
      range_ -= bound;
    } else {
      range_ = bound;
    }
    model.update(bit);
    normalize();
  }
  // `bits` (at most 32) of `value`, high first, at probability 1/2 each, up to kDirectStep of
  // them per step: the range is split into 2^k equal parts and the k bits pick one.
  void encode_direct(std::uint32_t value, int bits) {
    while (bits > 0) {
      const int k = bits < kDirectStep ? bits : kDirectStep;
      bits -= k;
      range_ >>= k;
      low_ += std::uint64_t{(value >> bits) & ((1U << k) - 1)} * range_;
      normalize();
    }
  }
  // The coded bytes; the coder is spent after this.
  std::string finish() {
    for (int i = 0; i < 5; ++i) shift_low();
    return std::move(out_);
  }

 private:
  void normalize() {
    while (range_ < (1U << 24)) {
      range_ <<= 8;
      shift_low();
    }
  }
  void shift_low() {
    if (static_cast<std::uint32_t>(low_) < 0xFF000000U || (low_ >> 32) != 0) {
      const auto carry = static_cast<unsigned char>(low_ >> 32);
      unsigned char byte = cache_;
      for (; pending_ != 0; --pending_) {
        if (started_) out_ += static_cast<char>(static_cast<unsigned char>(byte + carry));
        started_ = true;
        byte = 0xFF;
      }
      cache_ = static_cast<unsigned char>(low_ >> 24);
    }
    ++pending_;
    low_ = (low_ & 0x00FFFFFFU) << 8;
  }

  std::uint64_t low_ = 0;
  std::uint32_t range_ = 0xFFFFFFFFU;
  unsigned char cache_ = 0;
  std::uint64_t pending_ = 1;
  bool started_ = false;  // the first byte (always 0) is not written
  std::string out_;
};

class RangeDecoder {
 public:
  explicit RangeDecoder(std::string_view in) : in_(in) {
    for (int i = 0; i < 4; ++i) code_ = (code_ << 8) | next();
  }
  bool decode(BitModel& model) {
    const std::uint32_t bound = (range_ >> 16) * model.p0();
    bool bit;
    if (code_ < bound) {
      range_ = bound;
      bit = false;
    } else {
      code_ -= bound;
      range_ -= bound;
      bit = true;
    }
    model.update(bit);
    normalize();
    return bit;
  }
  std::uint32_t decode_direct(int bits) {
    std::uint32_t value = 0;
    while (bits > 0) {
      const int k = bits < kDirectStep ? bits : kDirectStep;
      bits -= k;
      range_ >>= k;
      std::uint32_t part = code_ / range_;
      // Only a damaged stream gets here; its output is then wrong, never out of bounds.
      if (part >> k) part = (1U << k) - 1;
      code_ -= part * range_;
      value = (value << k) | part;
      normalize();
    }
    return value;
  }
  // Bytes read beyond the input (zeros): non-zero means the stream was cut short.
  std::size_t overrun() const { return pos_ > in_.size() ? pos_ - in_.size() : 0; }
  // Bytes of the input not read.
  std::size_t unread() const { return pos_ < in_.size() ? in_.size() - pos_ : 0; }

 private:
  std::uint32_t next() {
    const std::size_t at = pos_++;
    return at < in_.size() ? static_cast<unsigned char>(in_[at]) : 0U;
  }
  void normalize() {
    while (range_ < (1U << 24)) {
      range_ <<= 8;
      code_ = (code_ << 8) | next();
    }
  }

  std::string_view in_;
  std::size_t pos_ = 0;
  std::uint32_t range_ = 0xFFFFFFFFU;
  std::uint32_t code_ = 0;
};

}  // namespace cairn::modelpkg::detail
