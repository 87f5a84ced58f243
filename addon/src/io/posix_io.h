// FileIo over pread/pwrite: device memory is staged through pinned host bounce buffers of a
// fixed size, one per transfer in flight, kept for the next.
#pragma once
#ifdef SW_WITH_CUDA
#include <mutex>
#include <string>
#include <vector>

#include "io/file_io.h"

namespace spillway {

class PosixIo final : public FileIo {
 public:
  // `bounce_bytes`: the size of each bounce buffer, the most one transfer moves.
  PosixIo(std::string reason, size_t bounce_bytes) : FileIo(std::move(reason)), bounce_bytes_(bounce_bytes) {}
  ~PosixIo() override { Close(); }

  const char* Name() const override { return "posix"; }
  bool AddFile(int, std::string*) override { return true; }
  void RemoveFile(int) override {}
  bool RegisterBuffer(void*, size_t) override { return false; }
  size_t MaxTransfer() const override { return bounce_bytes_; }
  size_t Read(int fd, uint64_t offset, size_t bytes, uint8_t* base, size_t base_offset, cudaStream_t stream, const std::string& what) override;
  void Write(int fd, uint64_t offset, size_t bytes, const uint8_t* base, size_t base_offset, cudaStream_t stream, const std::string& what) override;
  void Close() override;

 private:
  class Bounce;

  size_t bounce_bytes_;
  std::mutex bounce_mu_;
  std::vector<uint8_t*> free_bounce_, all_bounce_;
};

}  // namespace spillway
#endif  // SW_WITH_CUDA
