// FileIo over cuFile (cufile_api.h): files registered as cuFile handles, transfers as
// cuFileRead/cuFileWrite straight to and from device memory (GPUDirect Storage where
// nvidia-fs is loaded, cuFile's own bounce buffers in compatibility mode).
#pragma once
#ifdef SW_WITH_CUDA
#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "io/cufile_api.h"
#include "io/file_io.h"

namespace spillway {

class CufileIo final : public FileIo {
 public:
  // `api`: the driver, opened (cufile::Open).
  explicit CufileIo(const cufile::Api* api);
  ~CufileIo() override { Close(); }

  const char* Name() const override { return "cufile"; }
  std::string CufileMode() const override { return mode_; }
  bool AddFile(int fd, std::string* why) override;
  void RemoveFile(int fd) override;
  bool RegisterBuffer(void* base, size_t bytes) override;
  size_t MaxTransfer() const override { return SIZE_MAX; }
  size_t Read(int fd, uint64_t offset, size_t bytes, uint8_t* base, size_t base_offset, cudaStream_t stream, const std::string& what) override;
  void Write(int fd, uint64_t offset, size_t bytes, const uint8_t* base, size_t base_offset, cudaStream_t stream, const std::string& what) override;
  void Close() override;

 private:
  const cufile::Api* api_;
  std::string mode_;
  std::unordered_map<int, cufile::Handle> files_;
  // Staging buffers register from worker threads.
  std::mutex buffers_mu_;
  std::vector<const void*> buffers_;
};

}  // namespace spillway
#endif  // SW_WITH_CUDA
