// How the GPU backend's disk tier and the weights arena read and write files: the `io`
// option ('auto' | 'cufile' | 'posix', runtime/io-mode.ts), decided once at open with its
// reason, as kvikio's CompatModeManager does. The decision is a FileIo (file_io.h) that
// every operation then goes through: CufileIo where the driver opens and every file
// registers, PosixIo (pread/pwrite through pinned bounce buffers) otherwise. Under 'auto' a
// file cuFile refuses moves the choice to POSIX; under 'cufile' it is IO_ERROR; 'posix'
// never opens the driver.
#pragma once
#include <napi.h>

#include <memory>
#include <string>

#include "io/file_io.h"

namespace spillway {

enum class IoMode { kAuto, kCufile, kPosix };

// The `io` field of an options object, 'auto' when absent; anything else is a TypeError
// naming it (the runtime's configuration check lets nothing else through).
IoMode IoModeOption(Napi::Env env, const Napi::Object& options);

#ifdef SW_WITH_CUDA
class IoChoice {
 public:
  IoChoice() = default;
  // Opens the cuFile driver unless `mode` is kPosix; throws CodedError IO_ERROR under
  // kCufile when it cannot be opened. `bounce_bytes`: the size of the POSIX path's bounce
  // buffers, the most one transfer moves there.
  IoChoice(IoMode mode, size_t bounce_bytes);

  // Readies `fd` (the file at `path`) on the chosen path. Where cuFile refuses it, 'auto'
  // moves the choice to POSIX and returns false: every file and buffer registered with cuFile
  // is deregistered. Throws CodedError IO_ERROR under 'cufile'.
  bool AddFile(int fd, const std::string& path);

  // The chosen path.
  FileIo* operator->() const { return io_.get(); }
  // FileIo::Close on the chosen path, where a choice was made.
  void Close() {
    if (io_) io_->Close();
  }

 private:
  void FallBack(const std::string& why);

  IoMode mode_ = IoMode::kPosix;
  size_t bounce_bytes_ = 0;
  std::unique_ptr<FileIo> io_;
};
#endif  // SW_WITH_CUDA

}  // namespace spillway
