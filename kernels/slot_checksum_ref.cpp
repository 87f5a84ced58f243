// C++ reference of kernels/slot_checksum.cu: the same sum, one thread.
#include <cstring>

#include "slot_checksum.h"
#include "slot_checksum_mix.h"

extern "C" uint64_t sw_mixsum64_ref(const void* data, size_t length) {
  const auto* p = static_cast<const uint8_t*>(data);
  uint64_t sum = 0;
  size_t words = (length + 7) / 8;
  for (size_t i = 0; i < words; i++) {
    uint64_t w = 0;
    std::memcpy(&w, p + i * 8, i * 8 + 8 <= length ? 8 : length - i * 8);
    sum += sw_mix64(w + (i + 1) * SW_MIX_PHI);
  }
  return sw_mix64(sum ^ static_cast<uint64_t>(length));
}
