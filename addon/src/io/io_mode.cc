#include "io/io_mode.h"

#include "core/errors.h"
#include "io/cufile_api.h"
#include "io/cufile_io.h"
#include "io/posix_io.h"

namespace spillway {

IoMode IoModeOption(Napi::Env env, const Napi::Object& options) {
  Napi::Value v = options.Get("io");
  if (v.IsUndefined()) return IoMode::kAuto;
  std::string value = v.IsString() ? v.As<Napi::String>().Utf8Value() : "";
  if (value == "auto") return IoMode::kAuto;
  if (value == "cufile") return IoMode::kCufile;
  if (value == "posix") return IoMode::kPosix;
  throw Napi::TypeError::New(env, "options.io must be 'auto', 'cufile' or 'posix'");
}

#ifdef SW_WITH_CUDA
IoChoice::IoChoice(IoMode mode, size_t bounce_bytes) : mode_(mode), bounce_bytes_(bounce_bytes) {
  if (mode == IoMode::kPosix) {
    io_ = std::make_unique<PosixIo>("POSIX path requested by configuration", bounce_bytes);
    return;
  }
  std::string why;
  if (const cufile::Api* api = cufile::Open(&why)) io_ = std::make_unique<CufileIo>(api);
  else FallBack(why);
}

bool IoChoice::AddFile(int fd, const std::string& path) {
  std::string why;
  if (io_->AddFile(fd, &why)) return true;
  FallBack(path + ": " + why);
  return false;
}

void IoChoice::FallBack(const std::string& why) {
  if (mode_ == IoMode::kCufile) throw CodedError(ErrorCode::kIoError, "cuFile requested but unusable: " + why);
  io_ = std::make_unique<PosixIo>("POSIX path with pinned bounce buffers: " + why, bounce_bytes_);
}
#endif  // SW_WITH_CUDA

}  // namespace spillway
