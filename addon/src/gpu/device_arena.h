// One device allocation that files are read into: model weights at startup (cuFileRead
// straight into HBM, or pread through pinned buffers where cuFile cannot be used, the
// FileIo chosen at construction), and exported to other processes on the same GPU as a
// CUDA IPC handle. See device_arena.cc.
#pragma once
#ifdef SW_WITH_CUDA
#include <napi.h>

#include <atomic>
#include <string>
#include <vector>

#include "core/async_task.h"
#include "io/io_mode.h"

namespace spillway {

class DeviceArena : public Napi::ObjectWrap<DeviceArena> {
 public:
  static Napi::Function Define(Napi::Env env);
  explicit DeviceArena(const Napi::CallbackInfo& info);
  ~DeviceArena() override;

 private:
  struct File {
    int fd = -1;
    bool direct = false;
    std::string path;
  };

  Napi::Value OpenFiles(const Napi::CallbackInfo& info);
  Napi::Value Read(const Napi::CallbackInfo& info);
  Napi::Value CloseFiles(const Napi::CallbackInfo& info);
  Napi::Value CopyOut(const Napi::CallbackInfo& info);
  Napi::Value IpcHandle(const Napi::CallbackInfo& info);
  Napi::Value Info(const Napi::CallbackInfo& info);
  Napi::Value Free(const Napi::CallbackInfo& info);

  Napi::Promise Run(Napi::Env env, std::vector<Napi::Value> keep, AsyncTask::Work work, AsyncTask::Result result = nullptr);
  void CheckLive(Napi::Env env) const;
  void CloseAll();
  void Release();

  int device_ = 0;
  uint8_t* base_ = nullptr;
  uint64_t bytes_ = 0;
  bool registered_ = false;  // with cuFile, for DMA straight into the arena
  IoChoice io_;
  std::vector<File> files_;
  std::atomic<int> in_flight_{0};
};

}  // namespace spillway
#endif
