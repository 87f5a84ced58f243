// How bytes move between an open file and device memory once the path is chosen
// (io_mode.h): CufileIo has cuFile DMA them, PosixIo moves them with pread/pwrite through
// pinned bounce buffers. Files are named by descriptor; device memory by the base of a
// buffer and an offset into it, as cuFileRead and cuFileWrite take it (a registered buffer
// is known to cuFile by its base). Compiled only where the addon is built with CUDA.
#pragma once
#ifdef SW_WITH_CUDA
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>

namespace spillway {

class FileIo {
 public:
  virtual ~FileIo() = default;

  // "cufile" or "posix", as info() reports it.
  virtual const char* Name() const = 0;
  // "gds" or "compat" on cuFile, "" elsewhere.
  virtual std::string CufileMode() const { return ""; }
  // Why this path moves the bytes, for status.
  const std::string& reason() const { return reason_; }

  // Readies the open file `fd` for Read and Write; false, with `why`, where this path
  // refuses it. Files are added and removed only while no transfer is in flight.
  virtual bool AddFile(int fd, std::string* why) = 0;
  // Forgets `fd`, before its owner closes it.
  virtual void RemoveFile(int fd) = 0;
  // Lets transfers land in [base, base + bytes) in place where the path can (cuFile's buffer
  // registration); true when it did. An unregistered buffer still works.
  virtual bool RegisterBuffer(void* base, size_t bytes) = 0;
  // The most bytes one Read or Write may move.
  virtual size_t MaxTransfer() const = 0;

  // Reads up to `bytes` at `offset` of `fd` into device memory at base + base_offset; returns
  // once they are there, with how many arrived, fewer only where the file ends. Copies it
  // makes run on `stream`. Throws CodedError IO_ERROR naming `what`.
  virtual size_t Read(int fd, uint64_t offset, size_t bytes, uint8_t* base, size_t base_offset, cudaStream_t stream, const std::string& what) = 0;
  // Writes `bytes` of device memory at base + base_offset to `fd` at `offset`, once the work
  // queued on `stream` is done. Throws CodedError DISK_FULL or IO_ERROR naming `what`.
  virtual void Write(int fd, uint64_t offset, size_t bytes, const uint8_t* base, size_t base_offset, cudaStream_t stream, const std::string& what) = 0;

  // Gives back what the path holds (cuFile registrations, bounce buffers) before the files
  // are closed and the buffers freed; the name and reason stay for status.
  virtual void Close() = 0;

 protected:
  explicit FileIo(std::string reason) : reason_(std::move(reason)) {}

 private:
  std::string reason_;
};

}  // namespace spillway
#endif  // SW_WITH_CUDA
