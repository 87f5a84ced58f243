// The disk tier's slot file on the host path: one preallocated file of fixed-size slots,
// read and written with pread/pwrite (O_DIRECT where the filesystem allows it) on the
// tier's disk queue (io/disk_queue.h). Every slot starts with a 64-byte header carrying the
// block's id, generation, prefix hash (committed blocks), payload length and CRC-32C; a read
// verifies them before any byte reaches the caller. Each write is bracketed by a write mark.
#pragma once
#include <napi.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "io/disk_io.h"
#include "io/disk_queue.h"

namespace spillway {

class SlotFile : public Napi::ObjectWrap<SlotFile> {
 public:
  static Napi::Function Define(Napi::Env env);
  explicit SlotFile(const Napi::CallbackInfo& info);
  ~SlotFile() override;

 private:
  Napi::Value Write(const Napi::CallbackInfo& info);
  Napi::Value Read(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);
  Napi::Value InjectFault(const Napi::CallbackInfo& info);
  Napi::Value Info(const Napi::CallbackInfo& info);
  Napi::Value TakeDiskRuns(const Napi::CallbackInfo& info);

  uint64_t SlotOffset(uint32_t slot) const { return static_cast<uint64_t>(slot) * slot_bytes_; }

  // write's and read's first six arguments, checked: the slot, the block, and the range of
  // `buffer` (named `name`) its payload comes from or goes to.
  struct SlotIo {
    uint32_t slot;
    uint64_t block_id, generation, length;
    Napi::Buffer<uint8_t> buffer;
    uint8_t* data;
  };
  SlotIo IoArgs(const Napi::CallbackInfo& info, const char* name, const char* offset_name) const;

  std::string path_;
  int fd_ = -1;
  bool direct_ = false;
  bool preallocated_ = false;
  std::string direct_reason_;
  uint64_t slot_bytes_ = 0;
  uint32_t slot_count_ = 0;
  WriteMarks marks_;
  FaultInjector faults_;
  std::atomic<int> in_flight_{0};
  std::unique_ptr<DiskQueue> queue_;
};

}  // namespace spillway
