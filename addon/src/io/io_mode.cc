#include "io/io_mode.h"

#include "core/errors.h"

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

IoChoice::IoChoice(IoMode mode) : mode_(mode) {
  if (mode == IoMode::kPosix) return;
  std::string why;
  api_ = cufile::Open(&why);
  if (api_) {
    cufile_mode_ = cufile::NvfsVersion().empty() ? "compat" : "gds";
    reason_ = cufile::ModeDescription();
  } else {
    FallBack(why);
  }
}

cufile::Handle IoChoice::Register(int fd, const std::string& path) {
  if (!api_) return nullptr;
  std::string why;
  cufile::Handle handle = cufile::RegisterFile(api_, fd, &why);
  if (!handle) FallBack(path + ": " + why);
  return handle;
}

void IoChoice::FallBack(const std::string& why) {
  if (mode_ == IoMode::kCufile) throw CodedError(ErrorCode::kIoError, "cuFile requested but unusable: " + why);
  api_ = nullptr;
  cufile_mode_.clear();
  reason_ = "POSIX path with pinned bounce buffers: " + why;
}

}  // namespace spillway
