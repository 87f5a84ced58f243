#ifdef SW_WITH_CUDA
#include "gpu/device_arena.h"

#include <cuda_runtime.h>
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstring>

#include "core/args.h"
#include "core/errors.h"
#include "gpu/device_task.h"
#include "io/disk_io.h"
#include "io/io_mode.h"

namespace spillway {
Napi::Function DeviceArena::Define(Napi::Env env) {
  return DefineClass(env, "DeviceArena",
                     {InstanceMethod("openFiles", &DeviceArena::OpenFiles), InstanceMethod("read", &DeviceArena::Read),
                      InstanceMethod("closeFiles", &DeviceArena::CloseFiles), InstanceMethod("copyOut", &DeviceArena::CopyOut),
                      InstanceMethod("ipcHandle", &DeviceArena::IpcHandle), InstanceMethod("info", &DeviceArena::Info),
                      InstanceMethod("free", &DeviceArena::Free)});
}

// new DeviceArena(bytes, { io: 'auto' | 'cufile' | 'posix', maxReadBytes, device })
DeviceArena::DeviceArena(const Napi::CallbackInfo& info) : Napi::ObjectWrap<DeviceArena>(info) {
  Napi::Env env = info.Env();
  bytes_ = ArgU64(info, 0, "bytes");
  IoMode io = IoMode::kAuto;
  uint64_t max_read_bytes = 16u << 20;
  if (info.Length() > 1 && info[1].IsObject()) {
    Napi::Object o = info[1].As<Napi::Object>();
    io = IoModeOption(env, o);
    if (o.Get("maxReadBytes").IsNumber()) max_read_bytes = RoundUp(static_cast<uint64_t>(o.Get("maxReadBytes").As<Napi::Number>().DoubleValue()), kDiskAlign);
    device_ = DeviceOption(env, o);
  }
  cudaError_t rc = cudaSetDevice(device_);
  if (rc != cudaSuccess) throw NewError(env, ErrorCode::kInvalidArgument, "device " + std::to_string(device_) + ": " + cudaGetErrorString(rc));
  size_t free_bytes = 0, total = 0;
  cudaMemGetInfo(&free_bytes, &total);
  rc = cudaMalloc(reinterpret_cast<void**>(&base_), bytes_ ? bytes_ : 1);
  if (rc != cudaSuccess)
    throw NewError(env, ErrorCode::kOutOfMemory, "cannot allocate " + std::to_string(bytes_) + " bytes of device memory for the arena (" +
                                              std::to_string(free_bytes) + " free): " + cudaGetErrorString(rc));
  try {
    // A POSIX read goes through one bounce buffer: maxReadBytes is its size.
    io_ = IoChoice(io, max_read_bytes);
  } catch (const CodedError& e) {
    Release();
    throw NewError(env, e);
  }
  // Registration lets GPUDirect DMA land in place; an unregistered arena still works.
  registered_ = io_->RegisterBuffer(base_, bytes_);
}

DeviceArena::~DeviceArena() { Release(); }

void DeviceArena::CloseAll() {
  for (File& f : files_) {
    io_->RemoveFile(f.fd);
    close(f.fd);
  }
  files_.clear();
}

void DeviceArena::Release() {
  CloseAll();
  // Frees on the object's device; one that cannot be made current holds nothing of ours.
  (void)cudaSetDevice(device_);
  // cuFile lets go of the arena before it is freed.
  io_.Close();
  registered_ = false;
  cudaFree(base_);
  base_ = nullptr;
}

void DeviceArena::CheckLive(Napi::Env env) const {
  if (!base_) throw NewError(env, ErrorCode::kClosed, "the device arena has been freed");
}

Napi::Promise DeviceArena::Run(Napi::Env env, std::vector<Napi::Value> keep, AsyncTask::Work work, AsyncTask::Result result) {
  return RunOnDevice(env, Value(), std::move(keep), in_flight_, device_, std::move(work), std::move(result));
}

// openFiles(paths: string[]): opens each file for reading (O_DIRECT where allowed) and
// readies it on the chosen path (cuFile registers it). Files are then named by index.
Napi::Value DeviceArena::OpenFiles(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CheckLive(env);
  if (info.Length() < 1 || !info[0].IsArray()) throw Napi::TypeError::New(env, "paths must be an array of strings");
  if (in_flight_.load() > 0) throw NewError(env, ErrorCode::kBusy, "reads are in flight");
  Napi::Array paths = info[0].As<Napi::Array>();
  CloseAll();
  for (uint32_t i = 0; i < paths.Length(); i++) {
    File f;
    f.path = paths.Get(i).ToString().Utf8Value();
    f.fd = open(f.path.c_str(), O_RDONLY | O_CLOEXEC | O_DIRECT);
    f.direct = f.fd >= 0;
    if (f.fd < 0) f.fd = open(f.path.c_str(), O_RDONLY | O_CLOEXEC);
    if (f.fd < 0) {
      int err = errno;
      CloseAll();
      throw NewError(env, ErrorCode::kIoError, "cannot open " + f.path + ": " + strerror(err));
    }
    try {
      // Under 'auto' a file cuFile refuses moves every read to POSIX, as on the disk tier,
      // and the arena's registration goes with cuFile.
      if (!io_.AddFile(f.fd, f.path)) registered_ = false;
    } catch (const CodedError& e) {
      close(f.fd);
      CloseAll();
      throw NewError(env, e);
    }
    files_.push_back(f);
  }
  return env.Undefined();
}

// read(file, fileOffset, length, required, arenaOffset): delivers at least `required` of
// the `length` bytes at fileOffset (the rest may lie past the end of the file) to the arena.
Napi::Value DeviceArena::Read(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CheckLive(env);
  uint32_t file = ArgU32(info, 0, "file");
  uint64_t offset = ArgU64(info, 1, "fileOffset");
  uint64_t length = ArgU64(info, 2, "length");
  uint64_t required = ArgU64(info, 3, "required");
  uint64_t at = ArgU64(info, 4, "arenaOffset");
  if (file >= files_.size()) throw Napi::RangeError::New(env, "file " + std::to_string(file) + " is not open");
  if (required > length || at > bytes_ || length > bytes_ - at) throw Napi::RangeError::New(env, "read does not fit the arena");
  if (length > io_->MaxTransfer()) throw Napi::RangeError::New(env, "read is larger than maxReadBytes");
  File f = files_[file];
  return Run(env, {}, [this, f, offset, length, required, at] {
    std::string what = "read of " + std::to_string(length) + " bytes at " + std::to_string(offset) + " in " + f.path;
    // POSIX copies on the legacy default stream, as cudaMemcpy does.
    size_t got = io_->Read(f.fd, offset, length, base_, at, nullptr, what);
    if (got < required) throw CodedError(ErrorCode::kIoError, what + ": short read, " + std::to_string(got) + " of " + std::to_string(required) + " bytes");
  });
}

Napi::Value DeviceArena::CloseFiles(const Napi::CallbackInfo& info) {
  if (in_flight_.load() > 0) throw NewError(info.Env(), ErrorCode::kBusy, "reads are in flight");
  CloseAll();
  return info.Env().Undefined();
}

// copyOut(offset, length): Promise<Buffer> with arena bytes, to check what landed there.
Napi::Value DeviceArena::CopyOut(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CheckLive(env);
  uint64_t offset = ArgU64(info, 0, "offset");
  uint64_t length = ArgU64(info, 1, "length");
  if (offset > bytes_ || length > bytes_ - offset) throw Napi::RangeError::New(env, "range is outside the arena");
  auto out = Napi::Buffer<uint8_t>::New(env, length);
  uint8_t* dst = out.Data();
  const uint8_t* src = base_ + offset;
  return Run(
      env, {out}, [dst, src, length] { CheckCuda(cudaMemcpy(dst, src, length, cudaMemcpyDeviceToHost), "copy from device"); },
      [](Napi::Env, const AsyncTask::Kept& kept) { return kept[0].Value(); });
}

// ipcHandle(): Buffer with the cudaIpcMemHandle_t of the arena, for cudaIpcOpenMemHandle
// in another process on the same GPU.
Napi::Value DeviceArena::IpcHandle(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CheckLive(env);
  cudaIpcMemHandle_t h;
  cudaError_t rc = cudaSetDevice(device_);
  if (rc == cudaSuccess) rc = cudaIpcGetMemHandle(&h, base_);
  if (rc != cudaSuccess) throw NewError(env, ErrorCode::kInternal, std::string("cudaIpcGetMemHandle: ") + cudaGetErrorString(rc));
  return Napi::Buffer<uint8_t>::Copy(env, reinterpret_cast<const uint8_t*>(&h), sizeof h);
}

Napi::Value DeviceArena::Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("bytes", static_cast<double>(bytes_));
  o.Set("device", device_);
  o.Set("io", io_->Name());
  o.Set("ioReason", io_->reason());
  o.Set("registered", registered_);
  return o;
}

Napi::Value DeviceArena::Free(const Napi::CallbackInfo& info) {
  if (in_flight_.load() > 0) throw NewError(info.Env(), ErrorCode::kBusy, "reads are in flight");
  Release();
  return info.Env().Undefined();
}

}  // namespace spillway
#endif  // SW_WITH_CUDA
