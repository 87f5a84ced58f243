#include "slot_file.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <memory>

#include "async_task.h"
#include "checksum.h"

namespace spillway {
namespace {

constexpr uint32_t kSlotMagic = 0x4C535753;  // "SWSL"
constexpr uint16_t kSlotVersion = 1;

struct SlotHeader {
  uint32_t magic;
  uint16_t version;
  uint16_t flags;
  uint64_t key;
  uint64_t generation;
  uint32_t payload_bytes;
  uint32_t payload_crc;
  uint32_t header_crc;  // over the bytes before it
  uint8_t reserved[kSlotHeaderBytes - 36];
};
static_assert(sizeof(SlotHeader) == kSlotHeaderBytes, "slot header is 64 bytes");
constexpr size_t kHeaderCrcSpan = offsetof(SlotHeader, header_crc);

uint64_t RoundUp(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

struct AlignedFree {
  void operator()(uint8_t* p) const { std::free(p); }
};
using AlignedBuffer = std::unique_ptr<uint8_t, AlignedFree>;

AlignedBuffer AllocAligned(size_t bytes) {
  void* p = nullptr;
  if (posix_memalign(&p, kDiskAlign, bytes) != 0) throw CodedError("OUT_OF_MEMORY", "cannot allocate an I/O buffer of " + std::to_string(bytes) + " bytes");
  return AlignedBuffer(static_cast<uint8_t*>(p));
}

std::string ErrnoText(int err) { return std::string(strerror(err)) + " (errno " + std::to_string(err) + ")"; }

// ENOSPC and EDQUOT mean the disk is full; everything else is an I/O error.
[[noreturn]] void ThrowIo(const std::string& what, int err) {
  throw CodedError(err == ENOSPC || err == EDQUOT || err == EFBIG ? "DISK_FULL" : "IO_ERROR", what + ": " + ErrnoText(err));
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

// Returns bytes read; stops early only at end of file.
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

}  // namespace

Napi::Function SlotFile::Define(Napi::Env env) {
  return DefineClass(env, "SlotFile",
                     {InstanceMethod("write", &SlotFile::Write), InstanceMethod("read", &SlotFile::Read),
                      InstanceMethod("close", &SlotFile::Close), InstanceMethod("injectFault", &SlotFile::InjectFault),
                      InstanceMethod("info", &SlotFile::Info)});
}

// new SlotFile(path, slotBytes, slotCount, { direct = true })
SlotFile::SlotFile(const Napi::CallbackInfo& info) : Napi::ObjectWrap<SlotFile>(info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(env, "path must be a string");
  path_ = info[0].As<Napi::String>().Utf8Value();
  slot_bytes_ = ArgU64(info, 1, "slotBytes");
  slot_count_ = ArgU32(info, 2, "slotCount");
  bool want_direct = true;
  if (info.Length() > 3 && info[3].IsObject()) {
    Napi::Value d = info[3].As<Napi::Object>().Get("direct");
    if (d.IsBoolean()) want_direct = d.As<Napi::Boolean>().Value();
  }
  if (slot_bytes_ == 0 || slot_bytes_ % kDiskAlign != 0)
    throw MakeError(env, "INVALID_ARGUMENT", "slotBytes must be a positive multiple of 4096");

  int flags = O_RDWR | O_CREAT | O_CLOEXEC;
  if (want_direct) {
    fd_ = open(path_.c_str(), flags | O_DIRECT, 0644);
    if (fd_ >= 0) {
      direct_ = true;
    } else if (errno == EINVAL) {
      direct_reason_ = "the filesystem refuses O_DIRECT; using buffered I/O";
    } else {
      throw MakeError(env, "IO_ERROR", "cannot open disk tier file " + path_ + ": " + ErrnoText(errno));
    }
  } else {
    direct_reason_ = "O_DIRECT disabled by configuration";
  }
  if (fd_ < 0) fd_ = open(path_.c_str(), flags, 0644);
  if (fd_ < 0) throw MakeError(env, "IO_ERROR", "cannot open disk tier file " + path_ + ": " + ErrnoText(errno));

  uint64_t total = slot_bytes_ * slot_count_;
  int rc = posix_fallocate(fd_, 0, static_cast<off_t>(total));
  if (rc == 0) {
    preallocated_ = true;
  } else if (rc == EOPNOTSUPP || rc == EINVAL) {
    // The filesystem cannot reserve space; size the file and let writes find out.
    if (ftruncate(fd_, static_cast<off_t>(total)) != 0) rc = errno; else rc = 0;
  }
  if (rc != 0) {
    struct statvfs vfs {};
    std::string free_note;
    if (fstatvfs(fd_, &vfs) == 0)
      free_note = "; " + std::to_string(static_cast<uint64_t>(vfs.f_bavail) * vfs.f_frsize) + " bytes free there";
    close(fd_);
    fd_ = -1;
    bool full = rc == ENOSPC || rc == EDQUOT || rc == EFBIG;
    throw MakeError(env, full ? "DISK_FULL" : "IO_ERROR",
                    "cannot reserve " + std::to_string(total) + " bytes for disk tier file " + path_ + free_note + ": " + ErrnoText(rc));
  }
}

SlotFile::~SlotFile() {
  if (fd_ >= 0) close(fd_);
}

int SlotFile::TakeFault(std::atomic<int>& count, int err) {
  int left = count.load();
  while (left > 0) {
    if (count.compare_exchange_weak(left, left - 1)) return err;
  }
  return 0;
}

// write(slot, key, generation, src, srcOffset, length): Promise<void>
Napi::Value SlotFile::Write(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (fd_ < 0) throw MakeError(env, "CLOSED", "disk tier file is closed");
  uint32_t slot = ArgU32(info, 0, "slot");
  uint64_t key = ArgU64(info, 1, "key");
  uint64_t generation = ArgU64(info, 2, "generation");
  auto src = ArgBuffer(info, 3, "src");
  uint64_t offset = ArgU64(info, 4, "srcOffset");
  uint64_t length = ArgU64(info, 5, "length");
  if (slot >= slot_count_) throw Napi::RangeError::New(env, "slot " + std::to_string(slot) + " is past the file's " + std::to_string(slot_count_) + " slots");
  if (length + kSlotHeaderBytes > slot_bytes_) throw Napi::RangeError::New(env, "length does not fit in a slot");
  CheckRange(env, src, offset, length, "src");
  const uint8_t* data = src.Data() + offset;
  int fault = TakeFault(write_faults_, write_fault_errno_);
  in_flight_++;
  return AsyncTask::Run(env, {src, Value()}, [this, slot, key, generation, data, length, fault] {
    struct Done { std::atomic<int>& n; ~Done() { n--; } } done{in_flight_};
    std::string what = "write of slot " + std::to_string(slot) + " in " + path_;
    if (fault) ThrowIo(what, fault);
    size_t io_bytes = RoundUp(kSlotHeaderBytes + length, kDiskAlign);
    AlignedBuffer buf = AllocAligned(io_bytes);
    SlotHeader h{};
    h.magic = kSlotMagic;
    h.version = kSlotVersion;
    h.key = key;
    h.generation = generation;
    h.payload_bytes = static_cast<uint32_t>(length);
    h.payload_crc = Crc32c(data, length);
    h.header_crc = Crc32c(&h, kHeaderCrcSpan);
    std::memcpy(buf.get(), &h, sizeof h);
    std::memcpy(buf.get() + kSlotHeaderBytes, data, length);
    std::memset(buf.get() + kSlotHeaderBytes + length, 0, io_bytes - kSlotHeaderBytes - length);
    FullPwrite(fd_, buf.get(), io_bytes, SlotOffset(slot), what);
  });
}

// read(slot, key, generation, dst, dstOffset, length): Promise<void>
// Fails with CHECKSUM_MISMATCH or SLOT_MISMATCH rather than return bytes it cannot vouch for.
Napi::Value SlotFile::Read(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (fd_ < 0) throw MakeError(env, "CLOSED", "disk tier file is closed");
  uint32_t slot = ArgU32(info, 0, "slot");
  uint64_t key = ArgU64(info, 1, "key");
  uint64_t generation = ArgU64(info, 2, "generation");
  auto dst = ArgBuffer(info, 3, "dst");
  uint64_t offset = ArgU64(info, 4, "dstOffset");
  uint64_t length = ArgU64(info, 5, "length");
  if (slot >= slot_count_) throw Napi::RangeError::New(env, "slot " + std::to_string(slot) + " is past the file's " + std::to_string(slot_count_) + " slots");
  if (length + kSlotHeaderBytes > slot_bytes_) throw Napi::RangeError::New(env, "length does not fit in a slot");
  CheckRange(env, dst, offset, length, "dst");
  uint8_t* out = dst.Data() + offset;
  int fault = TakeFault(read_faults_, read_fault_errno_);
  in_flight_++;
  return AsyncTask::Run(env, {dst, Value()}, [this, slot, key, generation, out, length, fault] {
    struct Done { std::atomic<int>& n; ~Done() { n--; } } done{in_flight_};
    std::string what = "read of slot " + std::to_string(slot) + " in " + path_;
    if (fault) ThrowIo(what, fault);
    size_t io_bytes = RoundUp(kSlotHeaderBytes + length, kDiskAlign);
    AlignedBuffer buf = AllocAligned(io_bytes);
    size_t got = FullPread(fd_, buf.get(), io_bytes, SlotOffset(slot), what);
    if (got < kSlotHeaderBytes + length)
      throw CodedError("IO_ERROR", what + ": short read, " + std::to_string(got) + " of " + std::to_string(io_bytes) + " bytes");
    SlotHeader h;
    std::memcpy(&h, buf.get(), sizeof h);
    if (h.magic != kSlotMagic || h.version != kSlotVersion || h.header_crc != Crc32c(&h, kHeaderCrcSpan))
      throw CodedError("CHECKSUM_MISMATCH", what + ": slot header is corrupt");
    if (h.key != key || h.generation != generation || h.payload_bytes != length)
      throw CodedError("SLOT_MISMATCH", what + ": slot holds block " + std::to_string(h.key) + " generation " + std::to_string(h.generation) +
                                            ", expected block " + std::to_string(key) + " generation " + std::to_string(generation));
    if (Crc32c(buf.get() + kSlotHeaderBytes, length) != h.payload_crc)
      throw CodedError("CHECKSUM_MISMATCH", what + ": payload checksum does not match");
    std::memcpy(out, buf.get() + kSlotHeaderBytes, length);
  });
}

Napi::Value SlotFile::Close(const Napi::CallbackInfo& info) {
  if (in_flight_.load() > 0) throw MakeError(info.Env(), "BUSY", "disk tier file has I/O in flight");
  if (fd_ >= 0) close(fd_);
  fd_ = -1;
  return info.Env().Undefined();
}

// injectFault(op: 'read' | 'write', errno, count): the next `count` operations fail with
// `errno`, exercising the error paths in tests the way a failing disk would.
Napi::Value SlotFile::InjectFault(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(env, "op must be 'read' or 'write'");
  std::string op = info[0].As<Napi::String>().Utf8Value();
  int err = static_cast<int>(ArgU32(info, 1, "errno"));
  int count = static_cast<int>(ArgU32(info, 2, "count"));
  if (op == "write") {
    write_fault_errno_ = err;
    write_faults_ = count;
  } else if (op == "read") {
    read_fault_errno_ = err;
    read_faults_ = count;
  } else {
    throw Napi::TypeError::New(env, "op must be 'read' or 'write'");
  }
  return env.Undefined();
}

Napi::Value SlotFile::Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("path", path_);
  o.Set("direct", direct_);
  o.Set("directReason", direct_reason_);
  o.Set("preallocated", preallocated_);
  o.Set("slotBytes", static_cast<double>(slot_bytes_));
  o.Set("slotCount", slot_count_);
  return o;
}

}  // namespace spillway
