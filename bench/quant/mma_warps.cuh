// The warp collectives of format 3's tile code (kernels/tq_matrix_tile.cuh) emulated on 32 CPU
// threads, beside the GPU's DeviceWarp there: the probe and the tests check the tile code's lane
// orders with it against a C++ model without a GPU.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <mutex>

namespace mma_probe {

class EmulatedWarp {
 public:
  template <typename T> T shfl_xor(T v, int mask) { return exchange(v, [&](uint32_t lane) { return lane ^ mask; }); }
  template <typename T> T shfl(T v, int src) { return exchange(v, [&](uint32_t) { return static_cast<uint32_t>(src); }); }
  // d += A B: A int8 (uint8 where kUnsignedA), B int8 (uint8 where kUnsignedB).
  template <bool kUnsignedB, bool kUnsignedA = false> void mma(int (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    const uint32_t lane = current_lane;
    for (int r = 0; r < 4; ++r) a_[lane][r] = a[r], c_[lane][r] = d[r];
    b_[lane][0] = b0, b_[lane][1] = b1;
    arrive();
    for (int r = 0; r < 4; ++r) {
      const uint32_t row = lane / 4 + 8 * (r / 2), col = 2 * (lane % 4) + r % 2;
      int64_t sum = c_[(row % 8) * 4 + col / 2][(row / 8) * 2 + col % 2];
      for (uint32_t k = 0; k < 32; ++k) sum += static_cast<int64_t>(a_at(row, k, kUnsignedA)) * b_at(k, col, kUnsignedB);
      d[r] = static_cast<int>(sum);
    }
    arrive();
  }
  // Every lane's writes to memory before it are seen by every lane after it (__syncwarp).
  void sync() { arrive(); }
  // The sum of v over the warp, in every lane (__reduce_add_sync).
  int reduce_add(int v) {
    const uint32_t lane = current_lane;
    std::memcpy(&slots_[lane], &v, sizeof v);
    arrive();
    int sum = 0;
    for (uint32_t l = 0; l < 32; ++l) {
      int x;
      std::memcpy(&x, &slots_[l], sizeof x);
      sum += x;
    }
    arrive();
    return sum;
  }
  static thread_local uint32_t current_lane;

 private:
  int a_at(uint32_t row, uint32_t k, bool is_unsigned) const {
    const uint32_t lane = (row % 8) * 4 + (k % 16) / 4, reg = (row / 8) + 2 * (k / 16);
    const uint32_t byte = (a_[lane][reg] >> (8 * (k % 4))) & 0xFF;
    return is_unsigned ? static_cast<int>(byte) : static_cast<int8_t>(byte);
  }
  int b_at(uint32_t k, uint32_t col, bool is_unsigned) const {
    const uint32_t lane = col * 4 + (k % 16) / 4, reg = k / 16;
    const uint32_t byte = (b_[lane][reg] >> (8 * (k % 4))) & 0xFF;
    return is_unsigned ? static_cast<int>(byte) : static_cast<int8_t>(byte);
  }
  template <typename T, typename Src> T exchange(T v, Src src) {
    const uint32_t lane = current_lane;
    std::memcpy(&slots_[lane], &v, sizeof v);
    arrive();
    T out;
    std::memcpy(&out, &slots_[src(lane)], sizeof out);
    arrive();
    return out;
  }
  void arrive() {
    std::unique_lock<std::mutex> lock(mutex_);
    const uint64_t generation = generation_;
    if (++arrived_ == 32) {
      arrived_ = 0, ++generation_;
      cv_.notify_all();
    } else {
      cv_.wait(lock, [&] { return generation_ != generation; });
    }
  }
  uint32_t a_[32][4], b_[32][2];
  int c_[32][4];
  unsigned long long slots_[32];
  std::mutex mutex_;
  std::condition_variable cv_;
  uint32_t arrived_ = 0;
  uint64_t generation_ = 0;
};
thread_local uint32_t EmulatedWarp::current_lane = 0;

}  // namespace mma_probe
