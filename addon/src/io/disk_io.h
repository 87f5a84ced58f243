// What both disk paths (host pread/pwrite and GPU cuFile) share: the tier file's opening
// and reservation, whole-buffer positional I/O, the 64-byte slot header that names the
// block, its prefix hash and its checksum, the marks of slot writes in flight, and the
// header scan a restart recovers from. docs/ARCHITECTURE.md documents the slot layout.
#pragma once
#include <napi.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>

namespace spillway {

constexpr uint32_t kSlotHeaderBytes = 64;
constexpr uint32_t kDiskAlign = 4096;

inline uint64_t RoundUp(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

struct AlignedFree {
  void operator()(uint8_t* p) const { std::free(p); }
};
using AlignedBuffer = std::unique_ptr<uint8_t, AlignedFree>;
AlignedBuffer AllocAligned(size_t bytes);

// Throws DISK_FULL for ENOSPC/EDQUOT/EFBIG, IO_ERROR otherwise, naming what failed.
[[noreturn]] void ThrowIo(const std::string& what, int err);
void FullPwrite(int fd, const uint8_t* p, size_t n, uint64_t off, const std::string& what);
size_t FullPread(int fd, uint8_t* p, size_t n, uint64_t off, const std::string& what);

struct TierFile {
  int fd = -1;
  bool direct = false;
  bool preallocated = false;
  std::string direct_reason;
};
// Opens (creating) and reserves slot_bytes * slots bytes; O_DIRECT where the filesystem
// allows it. Throws CodedError (DISK_FULL naming the free space, or IO_ERROR).
TierFile OpenTierFile(const std::string& path, uint64_t slot_bytes, uint32_t slots, bool want_direct);

enum class ChecksumKind : uint16_t { kCrc32c = 0, kMixSum64 = 1 };
constexpr uint16_t kSlotCommitted = 2;  // flags bit 1: prefix_hash holds the block's prefix hash
constexpr uint32_t kPrefixHashBytes = 16;

struct SlotHeader {
  uint32_t magic;
  uint16_t version;
  uint16_t flags;  // bit 0: ChecksumKind; bit 1: kSlotCommitted
  uint64_t block_id;
  uint64_t generation;
  uint32_t payload_bytes;
  uint32_t payload_checksum;
  uint8_t prefix_hash[kPrefixHashBytes];  // zero unless committed
  uint8_t reserved[12];
  uint32_t header_crc;  // CRC-32C of the bytes before it
};
static_assert(sizeof(SlotHeader) == kSlotHeaderBytes, "slot header is 64 bytes");
static_assert(offsetof(SlotHeader, header_crc) == 60, "header CRC is the header's last field");

// `prefix_hash`: the committed block's 16-byte prefix hash, or nullptr for a block that is not.
SlotHeader MakeSlotHeader(uint64_t block_id, uint64_t generation, uint32_t payload_bytes, ChecksumKind kind, uint32_t checksum,
                          const uint8_t* prefix_hash);
// Checks magic, header CRC, block id, generation and length (CHECKSUM_MISMATCH/SLOT_MISMATCH).
void VerifySlotHeader(const SlotHeader& h, uint64_t block_id, uint64_t generation, uint32_t payload_bytes, const std::string& what);
ChecksumKind KindOf(const SlotHeader& h);
// The payload checksum as a header stores it.
uint32_t PayloadChecksum(ChecksumKind kind, const void* data, size_t length);
uint32_t FoldChecksum(uint64_t sum);
[[noreturn]] void ThrowPayloadMismatch(const std::string& what);
// Argument i: a 16-byte prefix hash Buffer, or undefined/null for a block not committed.
struct PrefixHashArg {
  bool present = false;
  uint8_t bytes[kPrefixHashBytes] = {};
  const uint8_t* get() const { return present ? bytes : nullptr; }
};
PrefixHashArg ArgPrefixHash(const Napi::CallbackInfo& info, size_t i);

// One byte per slot in a file beside the tier file (`<path>.writing`): 1 while a write of the
// slot is in flight, 0 once it has landed. A restart drops every slot still marked, because
// a process that died in the middle of a write may have left its header and payload from
// two different blocks. The marks are buffered writes: they survive the process, not the machine.
class WriteMarks {
 public:
  WriteMarks() = default;
  WriteMarks(const WriteMarks&) = delete;
  WriteMarks& operator=(const WriteMarks&) = delete;
  ~WriteMarks() { Close(); }
  // Opens (creating) the marks file of `tier_path`, sized for `slots`; keeps existing marks.
  void Open(const std::string& tier_path, uint32_t slots);
  void Close();
  void Begin(uint32_t slot, const std::string& what) { Set(slot, 1, what); }
  void End(uint32_t slot, const std::string& what) { Set(slot, 0, what); }

 private:
  void Set(uint32_t slot, uint8_t value, const std::string& what);
  int fd_ = -1;
};

std::string WriteMarksPath(const std::string& tier_path);

// Reads the first kScanBytes of every slot (its header and the quantized block's header)
// into `out` (slots * kScanBytes bytes); a slot past the file's end reads as zeros.
constexpr uint32_t kScanBytes = 128;
void ScanSlotHeads(const std::string& path, uint64_t slot_bytes, uint32_t slots, uint8_t* out);
void InitSlotScan(Napi::Env env, Napi::Object exports);

// Test seam shared by both disk paths: the next `count` reads or writes are held `holdMs`
// (so that those asked for together overlap in time), then fail with `errno` where it is not 0,
// exercising the error paths the way a failing disk would.
struct InjectedFault {
  int err = 0;
  uint32_t hold_ms = 0;
  // On the operation's thread, before its transfer: holds it, then throws IO_ERROR/DISK_FULL as armed.
  void Apply(const std::string& what) const;
};

class FaultInjector {
 public:
  // What this operation must suffer, consuming one armed fault; nothing where none is armed.
  InjectedFault Take(bool write);
  // injectFault(op: 'read' | 'write', errno, count, holdMs = 0) from JS.
  Napi::Value Arm(const Napi::CallbackInfo& info);

 private:
  std::atomic<int> count_[2] = {0, 0};
  std::atomic<int> errno_[2] = {0, 0};
  std::atomic<uint32_t> hold_ms_[2] = {0, 0};
};

}  // namespace spillway
