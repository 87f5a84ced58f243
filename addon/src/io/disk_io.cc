#include "io/disk_io.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <mutex>
#include <thread>

#include "core/args.h"
#include "core/async_task.h"
#include "core/errors.h"
#include "core/thread_pool.h"
#include "io/checksum.h"
#include "slot_checksum.h"

namespace spillway {
namespace {

constexpr uint32_t kSlotMagic = 0x4C535753;  // "SWSL"
// 2: the prefix hash in the header, the header CRC at its end (1 had neither).
constexpr uint16_t kSlotVersion = 2;
constexpr size_t kHeaderCrcSpan = offsetof(SlotHeader, header_crc);

std::string ErrnoText(int err) { return std::string(strerror(err)) + " (errno " + std::to_string(err) + ")"; }

bool IsFull(int err) { return err == ENOSPC || err == EDQUOT || err == EFBIG; }

}  // namespace

AlignedBuffer AllocAligned(size_t bytes) {
  void* p = nullptr;
  if (posix_memalign(&p, kDiskAlign, bytes) != 0) throw CodedError(ErrorCode::kOutOfMemory, "cannot allocate an I/O buffer of " + std::to_string(bytes) + " bytes");
  return AlignedBuffer(static_cast<uint8_t*>(p));
}

void ThrowIo(const std::string& what, int err) {
  throw CodedError(IsFull(err) ? ErrorCode::kDiskFull : ErrorCode::kIoError, what + ": " + ErrnoText(err));
}

void FullPwrite(int fd, const uint8_t* p, size_t n, uint64_t off, const std::string& what) {
  while (n > 0) {
    ssize_t w = pwrite(fd, p, n, static_cast<off_t>(off));
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) ThrowIo(what, errno);
    if (w == 0) ThrowIo(what, EIO);
    p += w;
    n -= static_cast<size_t>(w);
    off += static_cast<uint64_t>(w);
  }
}

size_t FullPread(int fd, uint8_t* p, size_t n, uint64_t off, const std::string& what) {
  size_t total = 0;
  while (total < n) {
    ssize_t r = pread(fd, p + total, n - total, static_cast<off_t>(off + total));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) ThrowIo(what, errno);
    if (r == 0) break;
    total += static_cast<size_t>(r);
  }
  return total;
}

TierFile OpenTierFile(const std::string& path, uint64_t slot_bytes, uint32_t slots, bool want_direct) {
  TierFile f;
  int flags = O_RDWR | O_CREAT | O_CLOEXEC;
  if (want_direct) {
    f.fd = open(path.c_str(), flags | O_DIRECT, 0644);
    if (f.fd >= 0) f.direct = true;
    else if (errno == EINVAL) f.direct_reason = "the filesystem refuses O_DIRECT; using buffered I/O";
    else throw CodedError(ErrorCode::kIoError, "cannot open disk tier file " + path + ": " + ErrnoText(errno));
  } else {
    f.direct_reason = "O_DIRECT disabled by configuration";
  }
  if (f.fd < 0) f.fd = open(path.c_str(), flags, 0644);
  if (f.fd < 0) throw CodedError(ErrorCode::kIoError, "cannot open disk tier file " + path + ": " + ErrnoText(errno));

  uint64_t total = slot_bytes * slots;
  int rc = posix_fallocate(f.fd, 0, static_cast<off_t>(total));
  if (rc == 0) {
    f.preallocated = true;
  } else if (rc == EOPNOTSUPP || rc == EINVAL) {
    // The filesystem cannot reserve space; size the file and let writes find out.
    rc = ftruncate(f.fd, static_cast<off_t>(total)) != 0 ? errno : 0;
  }
  if (rc != 0) {
    struct statvfs vfs {};
    std::string free_note;
    if (fstatvfs(f.fd, &vfs) == 0) free_note = "; " + std::to_string(static_cast<uint64_t>(vfs.f_bavail) * vfs.f_frsize) + " bytes free there";
    close(f.fd);
    throw CodedError(IsFull(rc) ? ErrorCode::kDiskFull : ErrorCode::kIoError,
                     "cannot reserve " + std::to_string(total) + " bytes for disk tier file " + path + free_note + ": " + ErrnoText(rc));
  }
  return f;
}

SlotHeader MakeSlotHeader(uint64_t block_id, uint64_t generation, uint32_t payload_bytes, ChecksumKind kind, uint32_t checksum,
                          const uint8_t* prefix_hash) {
  SlotHeader h{};
  h.magic = kSlotMagic;
  h.version = kSlotVersion;
  h.flags = static_cast<uint16_t>(kind);
  if (prefix_hash) {
    h.flags |= kSlotCommitted;
    std::memcpy(h.prefix_hash, prefix_hash, kPrefixHashBytes);
  }
  h.block_id = block_id;
  h.generation = generation;
  h.payload_bytes = payload_bytes;
  h.payload_checksum = checksum;
  h.header_crc = Crc32c(&h, kHeaderCrcSpan);
  return h;
}

void VerifySlotHeader(const SlotHeader& h, uint64_t block_id, uint64_t generation, uint32_t payload_bytes, const std::string& what) {
  if (h.magic != kSlotMagic || h.version != kSlotVersion || h.header_crc != Crc32c(&h, kHeaderCrcSpan))
    throw CodedError(ErrorCode::kChecksumMismatch, what + ": slot header is corrupt");
  if (h.block_id != block_id || h.generation != generation || h.payload_bytes != payload_bytes)
    throw CodedError(ErrorCode::kSlotMismatch, what + ": slot holds block " + std::to_string(h.block_id) + " generation " + std::to_string(h.generation) +
                                          ", expected block " + std::to_string(block_id) + " generation " + std::to_string(generation));
}

ChecksumKind KindOf(const SlotHeader& h) { return static_cast<ChecksumKind>(h.flags & 1); }

uint32_t FoldChecksum(uint64_t sum) { return static_cast<uint32_t>(sum ^ (sum >> 32)); }

uint32_t PayloadChecksum(ChecksumKind kind, const void* data, size_t length) {
  return kind == ChecksumKind::kCrc32c ? Crc32c(data, length) : FoldChecksum(sw_mixsum64_ref(data, length));
}

void ThrowPayloadMismatch(const std::string& what) {
  throw CodedError(ErrorCode::kChecksumMismatch, what + ": payload checksum does not match");
}

PrefixHashArg ArgPrefixHash(const Napi::CallbackInfo& info, size_t i) {
  PrefixHashArg h;
  if (info.Length() <= i || info[i].IsUndefined() || info[i].IsNull()) return h;
  auto buf = ArgBuffer(info, i, "prefixHash");
  if (buf.Length() != kPrefixHashBytes) throw Napi::RangeError::New(info.Env(), "prefixHash must be 16 bytes");
  std::memcpy(h.bytes, buf.Data(), kPrefixHashBytes);
  h.present = true;
  return h;
}

std::string WriteMarksPath(const std::string& tier_path) { return tier_path + ".writing"; }

void WriteMarks::Open(const std::string& tier_path, uint32_t slots) {
  std::string path = WriteMarksPath(tier_path);
  fd_ = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) throw CodedError(ErrorCode::kIoError, "cannot open write marks file " + path + ": " + ErrnoText(errno));
  struct stat st {};
  if (fstat(fd_, &st) == 0 && static_cast<uint64_t>(st.st_size) < slots && ftruncate(fd_, slots) != 0) {
    int err = errno;
    Close();
    ThrowIo("sizing write marks file " + path, err);
  }
}

void WriteMarks::Close() {
  if (fd_ >= 0) close(fd_);
  fd_ = -1;
}

void WriteMarks::Set(uint32_t slot, uint8_t value, const std::string& what) {
  FullPwrite(fd_, &value, 1, slot, what + " (write mark)");
}

void ScanSlotHeads(const std::string& path, uint64_t slot_bytes, uint32_t slots, uint8_t* out) {
  std::memset(out, 0, static_cast<size_t>(slots) * kScanBytes);
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_DIRECT);
  if (fd < 0 && errno == EINVAL) {
    fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    // Buffered: without this, readahead would read far past each slot's first page.
    if (fd >= 0) posix_fadvise(fd, 0, 0, POSIX_FADV_RANDOM);
  }
  if (fd < 0 && errno == ENOENT) return;  // no file yet: nothing to recover
  if (fd < 0) throw CodedError(ErrorCode::kIoError, "cannot open disk tier file " + path + " to scan it: " + ErrnoText(errno));
  struct Closer { int fd; ~Closer() { close(fd); } } closer{fd};
  struct stat st {};
  if (fstat(fd, &st) != 0) ThrowIo("stat of " + path, errno);
  uint32_t present = static_cast<uint32_t>(std::min<uint64_t>(slots, static_cast<uint64_t>(st.st_size) / slot_bytes));
  std::string error;
  std::mutex error_mu;
  ParallelFor(present, [&](uint32_t begin, uint32_t end) {
    try {
      AlignedBuffer page = AllocAligned(kDiskAlign);
      for (uint32_t slot = begin; slot < end; slot++) {
        FullPread(fd, page.get(), kDiskAlign, slot * slot_bytes, "scan of slot " + std::to_string(slot) + " in " + path);
        std::memcpy(out + static_cast<size_t>(slot) * kScanBytes, page.get(), kScanBytes);
      }
    } catch (const std::exception& e) {
      std::lock_guard<std::mutex> lock(error_mu);
      error = e.what();
    }
  });
  if (!error.empty()) throw CodedError(ErrorCode::kIoError, error);
}

namespace {

// scanSlotHeads(path, slotBytes, slots): Promise<Buffer> of slots * 128 bytes.
Napi::Value ScanSlotHeadsJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(env, "path must be a string");
  std::string path = info[0].As<Napi::String>().Utf8Value();
  uint64_t slot_bytes = ArgU64(info, 1, "slotBytes");
  uint32_t slots = ArgU32(info, 2, "slots");
  if (slot_bytes == 0 || slot_bytes % kDiskAlign != 0) throw NewError(env, ErrorCode::kInvalidArgument, "slotBytes must be a positive multiple of 4096");
  auto out = Napi::Buffer<uint8_t>::New(env, std::max<size_t>(1, static_cast<size_t>(slots) * kScanBytes));
  uint8_t* dst = out.Data();
  return AsyncTask::Run(
      env, {out}, [path, slot_bytes, slots, dst] { ScanSlotHeads(path, slot_bytes, slots, dst); },
      [](Napi::Env, const AsyncTask::Kept& kept) { return kept[0].Value(); });
}

}  // namespace

void InitSlotScan(Napi::Env env, Napi::Object exports) {
  exports.Set("scanSlotHeads", Napi::Function::New(env, ScanSlotHeadsJs, "scanSlotHeads"));
  Napi::Object format = Napi::Object::New(env);
  format.Set("magic", kSlotMagic);
  format.Set("version", kSlotVersion);
  format.Set("headerBytes", kSlotHeaderBytes);
  format.Set("scanBytes", kScanBytes);
  format.Set("committedFlag", kSlotCommitted);
  format.Set("marksSuffix", WriteMarksPath(""));
  exports.Set("slotFormat", format);
}

void InjectedFault::Apply(const std::string& what) const {
  if (hold_ms) std::this_thread::sleep_for(std::chrono::milliseconds(hold_ms));
  if (err) ThrowIo(what, err);
}

InjectedFault FaultInjector::Take(bool write) {
  std::atomic<int>& count = count_[write];
  int left = count.load();
  while (left > 0)
    if (count.compare_exchange_weak(left, left - 1)) return {errno_[write].load(), hold_ms_[write].load()};
  return {};
}

Napi::Value FaultInjector::Arm(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string op = info.Length() > 0 && info[0].IsString() ? info[0].As<Napi::String>().Utf8Value() : "";
  if (op != "read" && op != "write") throw Napi::TypeError::New(env, "op must be 'read' or 'write'");
  bool write = op == "write";
  errno_[write] = static_cast<int>(ArgU32(info, 1, "errno"));
  hold_ms_[write] = info.Length() > 3 && !info[3].IsUndefined() ? ArgU32(info, 3, "holdMs") : 0;
  count_[write] = static_cast<int>(ArgU32(info, 2, "count"));
  return env.Undefined();
}

}  // namespace spillway
