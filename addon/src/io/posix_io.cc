#ifdef SW_WITH_CUDA
#include "io/posix_io.h"

#include "gpu/device_task.h"
#include "io/disk_io.h"

namespace spillway {

// A bounce buffer taken from the pool (or pinned anew) and returned however the transfer ends.
class PosixIo::Bounce {
 public:
  explicit Bounce(PosixIo* io) : io_(io) {
    {
      std::lock_guard<std::mutex> lock(io->bounce_mu_);
      if (!io->free_bounce_.empty()) {
        p_ = io->free_bounce_.back();
        io->free_bounce_.pop_back();
        return;
      }
    }
    CheckCuda(cudaHostAlloc(reinterpret_cast<void**>(&p_), io->bounce_bytes_, cudaHostAllocDefault), "pinned bounce buffer");
    std::lock_guard<std::mutex> lock(io->bounce_mu_);
    io->all_bounce_.push_back(p_);
  }
  ~Bounce() {
    std::lock_guard<std::mutex> lock(io_->bounce_mu_);
    io_->free_bounce_.push_back(p_);
  }
  uint8_t* get() const { return p_; }

 private:
  PosixIo* io_;
  uint8_t* p_ = nullptr;
};

size_t PosixIo::Read(int fd, uint64_t offset, size_t bytes, uint8_t* base, size_t base_offset, cudaStream_t stream, const std::string& what) {
  Bounce bounce(this);
  size_t got = FullPread(fd, bounce.get(), bytes, offset, what);
  CheckCuda(cudaMemcpyAsync(base + base_offset, bounce.get(), got, cudaMemcpyHostToDevice, stream), "copy from bounce buffer");
  CheckCuda(cudaStreamSynchronize(stream), "copy from bounce buffer");
  return got;
}

void PosixIo::Write(int fd, uint64_t offset, size_t bytes, const uint8_t* base, size_t base_offset, cudaStream_t stream, const std::string& what) {
  Bounce bounce(this);
  CheckCuda(cudaMemcpyAsync(bounce.get(), base + base_offset, bytes, cudaMemcpyDeviceToHost, stream), "copy to bounce buffer");
  CheckCuda(cudaStreamSynchronize(stream), "copy to bounce buffer");
  FullPwrite(fd, bounce.get(), bytes, offset, what);
}

void PosixIo::Close() {
  std::lock_guard<std::mutex> lock(bounce_mu_);
  for (uint8_t* p : all_bounce_) cudaFreeHost(p);
  all_bounce_.clear();
  free_bounce_.clear();
}

}  // namespace spillway
#endif  // SW_WITH_CUDA
