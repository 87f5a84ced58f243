// GPU tiers: device arenas for tiers 0 and 1, a pinned host arena for tier 2 (the host
// tier), and the disk tier through cuFile or POSIX (io/file_io.h).
// See gpu_tiers.cc. Compiled only where the addon is built with CUDA.
#pragma once
#ifdef SW_WITH_CUDA
#include <napi.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/async_task.h"
#include "gpu/device_task.h"
#include "io/disk_io.h"
#include "io/disk_queue.h"
#include "io/io_mode.h"
#include "turboquant.h"

namespace spillway {

class GpuTiers : public Napi::ObjectWrap<GpuTiers> {
 public:
  static Napi::Function Define(Napi::Env env);
  explicit GpuTiers(const Napi::CallbackInfo& info);
  ~GpuTiers() override;

 private:
  struct Staging;
  class StagingGuard;
  struct DiskRequest {
    uint32_t disk_slot;
    uint64_t block_id, generation;
    size_t bytes;
  };

  Napi::Value WriteRaw(const Napi::CallbackInfo& info);
  Napi::Value WriteSlot(const Napi::CallbackInfo& info);
  Napi::Value ReadSlot(const Napi::CallbackInfo& info);
  Napi::Value Quantize(const Napi::CallbackInfo& info);
  Napi::Value Dequantize(const Napi::CallbackInfo& info);
  Napi::Value DequantizeBytes(const Napi::CallbackInfo& info);
  Napi::Value Copy(const Napi::CallbackInfo& info);
  Napi::Value Spill(const Napi::CallbackInfo& info);
  Napi::Value Fill(const Napi::CallbackInfo& info);
  Napi::Value ReadDisk(const Napi::CallbackInfo& info);
  Napi::Value InjectFault(const Napi::CallbackInfo& info);
  Napi::Value Info(const Napi::CallbackInfo& info);
  Napi::Value IpcHandle(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);
  Napi::Value TakeDiskRuns(const Napi::CallbackInfo& info);

  Napi::Promise Run(Napi::Env env, std::vector<Napi::Value> keep, AsyncTask::Work work, AsyncTask::Result result = nullptr);
  // A disk operation on the tier's disk queue, on the object's device, counted as Run's work is.
  Napi::Promise RunDisk(Napi::Env env, DiskDirection direction, std::vector<Napi::Value> keep, AsyncTask::Work work,
                        AsyncTask::Result result = nullptr);
  Napi::Value Convert(const Napi::CallbackInfo& info, bool quantize);
  Napi::Value CopyIn(Napi::Env env, uint32_t tier, uint32_t slot, Napi::Buffer<uint8_t> src);
  // Decides the disk path once (io/io_mode.h) and readies the tier file on it.
  void OpenIo(IoMode mode);
  void Release();
  Staging* AcquireStaging();
  void ReleaseStaging(Staging* s);
  uint8_t* PinnedBlock(Staging* s);
  void BlockToDevice(Staging* s, void* dst, const void* src, size_t bytes, const std::string& what);
  void BlockToHost(Staging* s, void* dst, const void* src, size_t bytes, const std::string& what);
  uint8_t* SlotAddress(uint32_t tier, uint32_t slot) const;
  size_t TierBlockBytes(uint32_t tier) const;
  void CheckSlot(Napi::Env env, uint32_t tier, uint32_t slot) const;
  void CheckOpen(Napi::Env env) const;
  std::vector<uint32_t> SlotList(const Napi::CallbackInfo& info, size_t i, uint32_t tier, const char* name) const;
  DiskRequest DiskArgs(const Napi::CallbackInfo& info, size_t i, uint32_t tier) const;
  // spill's and fill's (tier, slot, diskSlot, blockId, generation), checked, on open tiers.
  struct TierDiskRequest {
    uint32_t tier;
    uint8_t* slot_address;
    DiskRequest disk;
  };
  TierDiskRequest TierDiskArgs(const Napi::CallbackInfo& info) const;
  void ReadVerified(Staging* s, const DiskRequest& r, bool quantized, const InjectedFault& fault);
  void CheckQuantHeader(const sw_tq_params& p, const uint8_t* host_header) const;

  int device_ = 0;
  DeviceIdentity device_identity_;  // read once: status asks for it every telemetry sample
  sw_tq_params params_{};
  size_t raw_bytes_ = 0, quant_bytes_ = 0;
  uint32_t raw_slots_ = 0, quant_slots_ = 0, host_slots_ = 0, disk_slots_ = 0;
  uint64_t disk_slot_bytes_ = 0;
  uint8_t* raw_ = nullptr;
  uint8_t* quant_ = nullptr;
  uint8_t* host_ = nullptr;  // pinned (cudaHostAlloc): DMA-reachable from the device
  std::string path_;
  TierFile file_;
  WriteMarks marks_;
  IoChoice io_;
  std::mutex staging_mu_;
  std::vector<Staging*> free_staging_, all_staging_;
  FaultInjector faults_;
  std::atomic<int> in_flight_{0};
  std::unique_ptr<DiskQueue> disk_queue_;
};

}  // namespace spillway
#endif
