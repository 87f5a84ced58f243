#include "io/slot_file.h"

#include <unistd.h>

#include <cstring>

#include "core/args.h"
#include "core/async_task.h"
#include "core/errors.h"
#include "io/disk_io.h"

namespace spillway {
Napi::Function SlotFile::Define(Napi::Env env) {
  return DefineClass(env, "SlotFile",
                     {InstanceMethod("write", &SlotFile::Write), InstanceMethod("read", &SlotFile::Read),
                      InstanceMethod("close", &SlotFile::Close), InstanceMethod("injectFault", &SlotFile::InjectFault),
                      InstanceMethod("info", &SlotFile::Info), InstanceMethod("takeDiskRuns", &SlotFile::TakeDiskRuns)});
}

// new SlotFile(path, slotBytes, slotCount, { direct = true, inFlight = 16 }): inFlight reads and
// writes at once (tiers.disk.inFlight)
SlotFile::SlotFile(const Napi::CallbackInfo& info) : Napi::ObjectWrap<SlotFile>(info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(env, "path must be a string");
  path_ = info[0].As<Napi::String>().Utf8Value();
  slot_bytes_ = ArgU64(info, 1, "slotBytes");
  slot_count_ = ArgU32(info, 2, "slotCount");
  bool want_direct = true;
  uint32_t in_flight = kDefaultDiskInFlight;
  if (info.Length() > 3 && info[3].IsObject()) {
    Napi::Object o = info[3].As<Napi::Object>();
    Napi::Value d = o.Get("direct");
    if (d.IsBoolean()) want_direct = d.As<Napi::Boolean>().Value();
    in_flight = DiskInFlightOption(env, o);
  }
  if (slot_bytes_ == 0 || slot_bytes_ % kDiskAlign != 0)
    throw NewError(env, ErrorCode::kInvalidArgument, "slotBytes must be a positive multiple of 4096");

  try {
    TierFile f = OpenTierFile(path_, slot_bytes_, slot_count_, want_direct);
    fd_ = f.fd;
    direct_ = f.direct;
    preallocated_ = f.preallocated;
    direct_reason_ = f.direct_reason;
    marks_.Open(path_, slot_count_);
  } catch (const CodedError& e) {
    throw NewError(env, e);
  }
  queue_ = std::make_unique<DiskQueue>(env, in_flight);
}

SlotFile::~SlotFile() {
  if (queue_) queue_->Shutdown();  // before the file it reads and writes goes
  if (fd_ >= 0) close(fd_);
}

SlotFile::SlotIo SlotFile::IoArgs(const Napi::CallbackInfo& info, const char* name, const char* offset_name) const {
  Napi::Env env = info.Env();
  if (fd_ < 0) throw NewError(env, ErrorCode::kClosed, "disk tier file is closed");
  uint32_t slot = ArgU32(info, 0, "slot");
  uint64_t block_id = ArgU64(info, 1, "blockId");
  uint64_t generation = ArgU64(info, 2, "generation");
  auto buffer = ArgBuffer(info, 3, name);
  uint64_t offset = ArgU64(info, 4, offset_name);
  uint64_t length = ArgU64(info, 5, "length");
  if (slot >= slot_count_) throw Napi::RangeError::New(env, "slot " + std::to_string(slot) + " is past the file's " + std::to_string(slot_count_) + " slots");
  if (length + kSlotHeaderBytes > slot_bytes_) throw Napi::RangeError::New(env, "length does not fit in a slot");
  CheckRange(env, buffer, offset, length, name);
  return {slot, block_id, generation, length, buffer, buffer.Data() + offset};
}

// write(slot, blockId, generation, src, srcOffset, length, prefixHash?): Promise<void>
Napi::Value SlotFile::Write(const Napi::CallbackInfo& info) {
  SlotIo a = IoArgs(info, "src", "srcOffset");
  PrefixHashArg hash = ArgPrefixHash(info, 6);
  const uint8_t* data = a.data;
  uint32_t slot = a.slot;
  uint64_t block_id = a.block_id, generation = a.generation, length = a.length;
  InjectedFault fault = faults_.Take(true);
  in_flight_++;
  return queue_->Run(info.Env(), DiskDirection::kWrite, {a.buffer, Value()}, CountedDown(in_flight_, [this, slot, block_id, generation, data, length, hash, fault] {
    std::string what = "write of slot " + std::to_string(slot) + " in " + path_;
    fault.Apply(what);
    size_t io_bytes = RoundUp(kSlotHeaderBytes + length, kDiskAlign);
    AlignedBuffer buf = AllocAligned(io_bytes);
    SlotHeader h = MakeSlotHeader(block_id, generation, static_cast<uint32_t>(length), ChecksumKind::kCrc32c,
                                  PayloadChecksum(ChecksumKind::kCrc32c, data, length), hash.get());
    std::memcpy(buf.get(), &h, sizeof h);
    std::memcpy(buf.get() + kSlotHeaderBytes, data, length);
    std::memset(buf.get() + kSlotHeaderBytes + length, 0, io_bytes - kSlotHeaderBytes - length);
    marks_.Begin(slot, what);
    FullPwrite(fd_, buf.get(), io_bytes, SlotOffset(slot), what);
    marks_.End(slot, what);
  }));
}

// read(slot, blockId, generation, dst, dstOffset, length): Promise<void>
// Fails with CHECKSUM_MISMATCH or SLOT_MISMATCH rather than return bytes it cannot vouch for.
Napi::Value SlotFile::Read(const Napi::CallbackInfo& info) {
  SlotIo a = IoArgs(info, "dst", "dstOffset");
  uint8_t* out = a.data;
  uint32_t slot = a.slot;
  uint64_t block_id = a.block_id, generation = a.generation, length = a.length;
  InjectedFault fault = faults_.Take(false);
  in_flight_++;
  return queue_->Run(info.Env(), DiskDirection::kRead, {a.buffer, Value()}, CountedDown(in_flight_, [this, slot, block_id, generation, out, length, fault] {
    std::string what = "read of slot " + std::to_string(slot) + " in " + path_;
    fault.Apply(what);
    size_t io_bytes = RoundUp(kSlotHeaderBytes + length, kDiskAlign);
    AlignedBuffer buf = AllocAligned(io_bytes);
    size_t got = FullPread(fd_, buf.get(), io_bytes, SlotOffset(slot), what);
    if (got < kSlotHeaderBytes + length)
      throw CodedError(ErrorCode::kIoError, what + ": short read, " + std::to_string(got) + " of " + std::to_string(io_bytes) + " bytes");
    SlotHeader h;
    std::memcpy(&h, buf.get(), sizeof h);
    VerifySlotHeader(h, block_id, generation, static_cast<uint32_t>(length), what);
    if (PayloadChecksum(KindOf(h), buf.get() + kSlotHeaderBytes, length) != h.payload_checksum) ThrowPayloadMismatch(what);
    std::memcpy(out, buf.get() + kSlotHeaderBytes, length);
  }));
}

Napi::Value SlotFile::Close(const Napi::CallbackInfo& info) {
  if (in_flight_.load() > 0) throw NewError(info.Env(), ErrorCode::kBusy, "disk tier file has I/O in flight");
  queue_->Shutdown();
  if (fd_ >= 0) close(fd_);
  fd_ = -1;
  marks_.Close();
  return info.Env().Undefined();
}

Napi::Value SlotFile::InjectFault(const Napi::CallbackInfo& info) { return faults_.Arm(info); }

Napi::Value SlotFile::TakeDiskRuns(const Napi::CallbackInfo& info) { return queue_->TakeRuns(info.Env()); }

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
