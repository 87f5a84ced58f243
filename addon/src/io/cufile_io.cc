#ifdef SW_WITH_CUDA
#include "io/cufile_io.h"

#include <errno.h>

#include "core/errors.h"
#include "gpu/device_task.h"
#include "io/disk_io.h"

namespace spillway {
namespace {

// cuFile's transfers return -1 with errno set for a system error, -(cuFile error) otherwise.
void ThrowOnFailure(ssize_t n, const std::string& what) {
  if (n == -1) ThrowIo(what, errno);
  if (n < 0) throw CodedError(ErrorCode::kIoError, what + ": cuFile error " + std::to_string(-n));
}

}  // namespace

CufileIo::CufileIo(const cufile::Api* api)
    : FileIo(cufile::ModeDescription()), api_(api), mode_(cufile::NvfsVersion().empty() ? "compat" : "gds") {}

bool CufileIo::AddFile(int fd, std::string* why) {
  cufile::Handle handle = cufile::RegisterFile(api_, fd, why);
  if (!handle) return false;
  files_[fd] = handle;
  return true;
}

void CufileIo::RemoveFile(int fd) {
  auto it = files_.find(fd);
  if (it == files_.end()) return;
  api_->HandleDeregister(it->second);
  files_.erase(it);
}

bool CufileIo::RegisterBuffer(void* base, size_t bytes) {
  if (api_->BufRegister(base, bytes, 0).err != cufile::kSuccess) return false;
  std::lock_guard<std::mutex> lock(buffers_mu_);
  buffers_.push_back(base);
  return true;
}

size_t CufileIo::Read(int fd, uint64_t offset, size_t bytes, uint8_t* base, size_t base_offset, cudaStream_t, const std::string& what) {
  ssize_t n = api_->Read(files_.at(fd), base, bytes, static_cast<off_t>(offset), static_cast<off_t>(base_offset));
  ThrowOnFailure(n, what);
  return static_cast<size_t>(n);
}

void CufileIo::Write(int fd, uint64_t offset, size_t bytes, const uint8_t* base, size_t base_offset, cudaStream_t stream, const std::string& what) {
  // cuFile reads the buffer outside the stream's order.
  CheckCuda(cudaStreamSynchronize(stream), what);
  ssize_t n = api_->Write(files_.at(fd), base, bytes, static_cast<off_t>(offset), static_cast<off_t>(base_offset));
  ThrowOnFailure(n, what);
  if (static_cast<size_t>(n) != bytes)
    throw CodedError(ErrorCode::kIoError, what + ": short transfer, " + std::to_string(n) + " of " + std::to_string(bytes) + " bytes");
}

void CufileIo::Close() {
  for (const auto& [fd, handle] : files_) api_->HandleDeregister(handle);
  files_.clear();
  std::lock_guard<std::mutex> lock(buffers_mu_);
  for (const void* base : buffers_) api_->BufDeregister(base);
  buffers_.clear();
}

}  // namespace spillway
#endif  // SW_WITH_CUDA
