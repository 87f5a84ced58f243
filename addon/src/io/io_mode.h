// How the GPU backend's disk tier and the weights arena read and write files: the `io`
// option ('auto' | 'cufile' | 'posix', runtime/io-mode.ts), decided once at open with its
// reason, as kvikio's CompatModeManager does. Operations then branch on the decision, never
// on the request: cuFile where the driver opens and every file registers, POSIX reads and
// writes through pinned bounce buffers otherwise. Under 'auto' a file cuFile refuses moves
// the choice to POSIX; under 'cufile' it is IO_ERROR; 'posix' never opens the driver.
#pragma once
#include <napi.h>

#include <string>

#include "io/cufile_api.h"

namespace spillway {

enum class IoMode { kAuto, kCufile, kPosix };

// The `io` field of an options object, 'auto' when absent; anything else is a TypeError
// naming it (the runtime's configuration check lets nothing else through).
IoMode IoModeOption(Napi::Env env, const Napi::Object& options);

class IoChoice {
 public:
  IoChoice() = default;
  // Opens the cuFile driver unless `mode` is kPosix; throws CodedError IO_ERROR under
  // kCufile when it cannot be opened.
  explicit IoChoice(IoMode mode);

  // Registers `fd` (the file at `path`) with cuFile while cuFile is the choice. Returns the
  // handle, or nullptr when the choice is (or has just become) POSIX: the caller then
  // deregisters what it registered before. Throws CodedError IO_ERROR under kCufile.
  cufile::Handle Register(int fd, const std::string& path);

  // The cuFile entry points while cuFile is the choice; nullptr on POSIX.
  const cufile::Api* cufile() const { return api_; }
  // "cufile" or "posix", as info() reports it.
  const char* Name() const { return api_ ? "cufile" : "posix"; }
  // "gds" or "compat" on cuFile, "" on POSIX.
  const std::string& cufile_mode() const { return cufile_mode_; }
  const std::string& reason() const { return reason_; }

 private:
  void FallBack(const std::string& why);

  IoMode mode_ = IoMode::kPosix;
  const cufile::Api* api_ = nullptr;
  std::string cufile_mode_;
  std::string reason_ = "POSIX path requested by configuration";
};

}  // namespace spillway
