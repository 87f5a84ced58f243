// The GPU backend's native half: tier 0 and tier 1 as one cudaMalloc arena each, carved
// into slots; tier 2 (the host tier, optional) as one pinned host arena of quantized
// blocks, moved to and from tier 1 by DMA copies; the disk tier through the FileIo chosen at
// open (io/file_io.h): cuFile (cuFileWrite/cuFileRead straight from device staging buffers)
// or, where cuFile is missing or cannot register the file, the project's own POSIX path
// with pinned bounce buffers. Every operation takes a staging context (device buffer,
// stream) from a pool, so several run at once on the addon's worker threads; the JS side
// sees promises that resolve when the GPU work and the I/O are done. Slot checksums are
// computed on the GPU (kernels/slot_checksum.h) and verified before any byte is copied to
// its destination.
#ifdef SW_WITH_CUDA
#include "gpu/gpu_tiers.h"

#include <cuda_runtime.h>
#include <unistd.h>

#include <cstring>
#include <mutex>
#include <vector>

#include "core/args.h"
#include "core/async_task.h"
#include "core/errors.h"
#include "gpu/device_task.h"
#include "host/quantize.h"
#include "io/disk_io.h"
#include "io/io_mode.h"
#include "slot_checksum.h"
#include "turboquant.h"

namespace spillway {
namespace {

constexpr uint32_t kMaxBatch = 4096;

}  // namespace

// The small host-side values an operation moves to or from the device, in pinned memory.
// A copy from or to pageable memory goes through the driver's own staging, which serializes
// across threads: under load a few bytes of slot list would wait behind other requests'
// 2 MiB blocks.
struct PinnedWords {
  uint32_t slots[2 * kMaxBatch];
  SlotHeader header;
  uint64_t sum;
  uint8_t quant_header[SW_TQ_HEADER_BYTES];
};

struct GpuTiers::Staging {
  uint8_t* dev = nullptr;          // one disk slot: header + payload, 4 KiB-aligned
  uint8_t* raw_scratch = nullptr;  // a raw block, for dequantizing bytes outside the tiers
  uint8_t* quant_scratch = nullptr;
  uint64_t* sum = nullptr;
  uint32_t* slots = nullptr;  // 2 * kMaxBatch slot indices
  PinnedWords* words = nullptr;
  uint8_t* pinned_block = nullptr;  // one raw block of pinned memory, on first use (BlockToDevice)
  cudaStream_t stream = nullptr;
};

// Returns a staging context to the pool however the operation ends.
class GpuTiers::StagingGuard {
 public:
  explicit StagingGuard(GpuTiers* t) : tiers_(t), s_(t->AcquireStaging()) {}
  ~StagingGuard() { tiers_->ReleaseStaging(s_); }
  Staging* operator->() const { return s_; }
  Staging* get() const { return s_; }

 private:
  GpuTiers* tiers_;
  Staging* s_;
};

Napi::Function GpuTiers::Define(Napi::Env env) {
  return DefineClass(env, "GpuTiers",
                     {InstanceMethod("writeRaw", &GpuTiers::WriteRaw), InstanceMethod("writeSlot", &GpuTiers::WriteSlot),
                      InstanceMethod("readSlot", &GpuTiers::ReadSlot),
                      InstanceMethod("quantize", &GpuTiers::Quantize), InstanceMethod("dequantize", &GpuTiers::Dequantize),
                      InstanceMethod("dequantizeBytes", &GpuTiers::DequantizeBytes), InstanceMethod("copy", &GpuTiers::Copy),
                      InstanceMethod("spill", &GpuTiers::Spill),
                      InstanceMethod("fill", &GpuTiers::Fill), InstanceMethod("readDisk", &GpuTiers::ReadDisk),
                      InstanceMethod("injectFault", &GpuTiers::InjectFault), InstanceMethod("info", &GpuTiers::Info),
                      InstanceMethod("ipcHandle", &GpuTiers::IpcHandle),
                      InstanceMethod("close", &GpuTiers::Close), InstanceMethod("takeDiskRuns", &GpuTiers::TakeDiskRuns)});
}

// new GpuTiers({ params, rawSlots, quantSlots, hostSlots, diskPath, diskSlots, diskSlotBytes, direct, io, device, inFlight })
//   io: 'auto' (cuFile where it works, else POSIX, with the reason) | 'cufile' | 'posix'
//   device: the visible device index the arenas, streams and kernels live on (0 when absent)
//   inFlight: disk operations at once (tiers.disk.inFlight; 16 when absent)
GpuTiers::GpuTiers(const Napi::CallbackInfo& info) : Napi::ObjectWrap<GpuTiers>(info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) throw Napi::TypeError::New(env, "options must be an object");
  Napi::Object o = info[0].As<Napi::Object>();
  auto num = [&](const char* name) { return static_cast<uint64_t>(FieldNumber(env, o, "options", name)); };
  params_ = ParamsFromJs(env, o.Get("params"));
  device_ = DeviceOption(env, o);
  raw_bytes_ = sw_tq_raw_bytes(&params_);
  quant_bytes_ = sw_tq_quantized_bytes(&params_);
  raw_slots_ = static_cast<uint32_t>(num("rawSlots"));
  quant_slots_ = static_cast<uint32_t>(num("quantSlots"));
  host_slots_ = static_cast<uint32_t>(num("hostSlots"));
  disk_slots_ = static_cast<uint32_t>(num("diskSlots"));
  disk_slot_bytes_ = num("diskSlotBytes");
  path_ = FieldString(env, o, "options", "diskPath");
  IoMode io = IoModeOption(env, o);
  bool direct = o.Get("direct").ToBoolean().Value();
  const uint32_t disk_in_flight = DiskInFlightOption(env, o);
  if (disk_slot_bytes_ % kDiskAlign != 0 || disk_slot_bytes_ < RoundUp(kSlotHeaderBytes + quant_bytes_, kDiskAlign))
    throw NewError(env, ErrorCode::kInvalidArgument, "diskSlotBytes must be a multiple of 4096 that holds a slot header and a quantized block");

  try {
    UseDevice(device_);
    device_identity_ = IdentifyDevice(device_);
    auto alloc = [&](uint8_t** p, uint64_t bytes, const char* tier) {
      size_t free_bytes = 0, total = 0;
      cudaMemGetInfo(&free_bytes, &total);
      cudaError_t rc = cudaMalloc(reinterpret_cast<void**>(p), bytes ? bytes : 1);
      if (rc != cudaSuccess)
        throw CodedError(ErrorCode::kOutOfMemory, std::string("cannot allocate the ") + tier + " tier's " + std::to_string(bytes) +
                                              " bytes of device memory (" + std::to_string(free_bytes) + " free): " + cudaGetErrorString(rc));
    };
    alloc(&raw_, static_cast<uint64_t>(raw_slots_) * raw_bytes_, "raw");
    alloc(&quant_, static_cast<uint64_t>(quant_slots_) * quant_bytes_, "quantized");
    if (host_slots_ > 0) {
      uint64_t bytes = static_cast<uint64_t>(host_slots_) * quant_bytes_;
      cudaError_t rc = cudaHostAlloc(reinterpret_cast<void**>(&host_), bytes, cudaHostAllocDefault);
      if (rc != cudaSuccess)
        throw CodedError(ErrorCode::kOutOfMemory, "cannot pin the host tier's " + std::to_string(bytes) + " bytes of host memory (tiers.host.bytes): " + cudaGetErrorString(rc));
    }
    file_ = OpenTierFile(path_, disk_slot_bytes_, disk_slots_, direct);
    marks_.Open(path_, disk_slots_);
    OpenIo(io);
  } catch (const CodedError& e) {
    Release();
    throw NewError(env, e);
  }
  disk_queue_ = std::make_unique<DiskQueue>(env, disk_in_flight);
}

void GpuTiers::OpenIo(IoMode mode) {
  // A POSIX transfer moves at most one disk slot.
  io_ = IoChoice(mode, disk_slot_bytes_);
  io_.AddFile(file_.fd, path_);
}

GpuTiers::~GpuTiers() { Release(); }

void GpuTiers::Release() {
  if (disk_queue_) disk_queue_->Shutdown();  // its threads use the staging buffers and the file
  // Frees on the object's device; one that cannot be made current holds nothing of ours.
  (void)cudaSetDevice(device_);
  // cuFile lets go of the staging buffers and the tier file before they are freed and closed.
  io_.Close();
  for (Staging* s : all_staging_) {
    cudaFree(s->dev);
    cudaFree(s->raw_scratch);
    cudaFree(s->quant_scratch);
    cudaFree(s->sum);
    cudaFree(s->slots);
    cudaFreeHost(s->words);
    cudaFreeHost(s->pinned_block);
    if (s->stream) cudaStreamDestroy(s->stream);
    delete s;
  }
  all_staging_.clear();
  free_staging_.clear();
  if (file_.fd >= 0) close(file_.fd);
  file_.fd = -1;
  marks_.Close();
  cudaFree(raw_);
  cudaFree(quant_);
  cudaFreeHost(host_);
  raw_ = quant_ = host_ = nullptr;
}

GpuTiers::Staging* GpuTiers::AcquireStaging() {
  {
    std::lock_guard<std::mutex> lock(staging_mu_);
    if (!free_staging_.empty()) {
      Staging* s = free_staging_.back();
      free_staging_.pop_back();
      return s;
    }
  }
  UseDevice(device_);
  auto* s = new Staging();
  try {
    CheckCuda(cudaStreamCreateWithFlags(&s->stream, cudaStreamNonBlocking), "cudaStreamCreate");
    CheckCuda(cudaMalloc(&s->dev, disk_slot_bytes_), "staging buffer");
    CheckCuda(cudaMalloc(&s->sum, sizeof(uint64_t)), "checksum word");
    CheckCuda(cudaMalloc(&s->slots, 2 * kMaxBatch * sizeof(uint32_t)), "slot list");
    CheckCuda(cudaHostAlloc(reinterpret_cast<void**>(&s->words), sizeof(PinnedWords), cudaHostAllocDefault), "pinned staging words");
  } catch (...) {
    cudaFree(s->dev);
    cudaFree(s->sum);
    cudaFree(s->slots);
    cudaFreeHost(s->words);
    if (s->stream) cudaStreamDestroy(s->stream);
    delete s;
    throw;
  }
  // Registered buffers let cuFile skip its own staging; unregistered ones still work.
  io_->RegisterBuffer(s->dev, disk_slot_bytes_);
  std::lock_guard<std::mutex> lock(staging_mu_);
  all_staging_.push_back(s);
  return s;
}

void GpuTiers::ReleaseStaging(Staging* s) {
  std::lock_guard<std::mutex> lock(staging_mu_);
  free_staging_.push_back(s);
}

// Block-sized copies between pageable host memory (a JS buffer) and the device go through
// the staging context's pinned block: a host copy and a DMA transfer, not the driver's
// pageable path (see PinnedWords). At most one raw block.
uint8_t* GpuTiers::PinnedBlock(Staging* s) {
  if (!s->pinned_block) CheckCuda(cudaHostAlloc(reinterpret_cast<void**>(&s->pinned_block), raw_bytes_, cudaHostAllocDefault), "pinned staging block");
  return s->pinned_block;
}

void GpuTiers::BlockToDevice(Staging* s, void* dst, const void* src, size_t bytes, const std::string& what) {
  uint8_t* pinned = PinnedBlock(s);
  std::memcpy(pinned, src, bytes);
  CheckCuda(cudaMemcpyAsync(dst, pinned, bytes, cudaMemcpyHostToDevice, s->stream), what);
  // the pinned block is free again only once the transfer has read it
  CheckCuda(cudaStreamSynchronize(s->stream), what);
}

void GpuTiers::BlockToHost(Staging* s, void* dst, const void* src, size_t bytes, const std::string& what) {
  uint8_t* pinned = PinnedBlock(s);
  CheckCuda(cudaMemcpyAsync(pinned, src, bytes, cudaMemcpyDeviceToHost, s->stream), what);
  CheckCuda(cudaStreamSynchronize(s->stream), what);
  std::memcpy(dst, pinned, bytes);
}

uint8_t* GpuTiers::SlotAddress(uint32_t tier, uint32_t slot) const {
  uint8_t* base = tier == 0 ? raw_ : tier == 1 ? quant_ : host_;
  return base + static_cast<uint64_t>(slot) * TierBlockBytes(tier);
}

size_t GpuTiers::TierBlockBytes(uint32_t tier) const { return tier == 0 ? raw_bytes_ : quant_bytes_; }

void GpuTiers::CheckSlot(Napi::Env env, uint32_t tier, uint32_t slot) const {
  if (tier > 2) throw Napi::RangeError::New(env, "tier must be 0 (raw), 1 (quantized) or 2 (host)");
  uint32_t n = tier == 0 ? raw_slots_ : tier == 1 ? quant_slots_ : host_slots_;
  if (slot >= n) throw Napi::RangeError::New(env, "slot " + std::to_string(slot) + " is past tier " + std::to_string(tier) + "'s " + std::to_string(n) + " slots");
}

void GpuTiers::CheckOpen(Napi::Env env) const {
  if (!raw_) throw NewError(env, ErrorCode::kClosed, "GPU tiers are closed");
}

// writeRaw(slot, src: Buffer): copies a raw block into a tier-0 slot.
Napi::Value GpuTiers::WriteRaw(const Napi::CallbackInfo& info) {
  return CopyIn(info.Env(), 0, ArgU32(info, 0, "slot"), ArgBuffer(info, 1, "src"));
}

// writeSlot(tier, slot, src: Buffer): copies one block into a slot of any memory tier
// (stored bytes for tiers 1 and 2, e.g. a block read from the shared tier).
Napi::Value GpuTiers::WriteSlot(const Napi::CallbackInfo& info) {
  return CopyIn(info.Env(), ArgU32(info, 0, "tier"), ArgU32(info, 1, "slot"), ArgBuffer(info, 2, "src"));
}

Napi::Value GpuTiers::CopyIn(Napi::Env env, uint32_t tier, uint32_t slot, Napi::Buffer<uint8_t> src) {
  CheckOpen(env);
  CheckSlot(env, tier, slot);
  size_t bytes = TierBlockBytes(tier);
  if (src.Length() != bytes) throw Napi::RangeError::New(env, tier == 0 ? "src must be one raw block" : "src must be one stored block");
  uint8_t* dst = SlotAddress(tier, slot);
  const uint8_t* data = src.Data();
  return Run(env, {src}, [this, dst, data, bytes, tier] {
    // The pinned host tier's slot is host memory: a plain copy.
    if (tier == 2) return static_cast<void>(std::memcpy(dst, data, bytes));
    StagingGuard s(this);
    BlockToDevice(s.get(), dst, data, bytes, "copy to tier " + std::to_string(tier));
  });
}

// readSlot(tier, slot, out?: Buffer): Promise<Buffer> with the slot's block (raw or stored
// format), in `out` when given.
Napi::Value GpuTiers::ReadSlot(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CheckOpen(env);
  uint32_t tier = ArgU32(info, 0, "tier");
  uint32_t slot = ArgU32(info, 1, "slot");
  CheckSlot(env, tier, slot);
  size_t bytes = TierBlockBytes(tier);
  auto out = OutBuffer(info, 2, bytes, "out");
  const uint8_t* src = SlotAddress(tier, slot);
  uint8_t* dst = out.Data();
  return Run(
      env, {out},
      [this, src, dst, bytes, tier] {
        if (tier == 2) return static_cast<void>(std::memcpy(dst, src, bytes));
        StagingGuard s(this);
        BlockToHost(s.get(), dst, src, bytes, "copy out of a tier");
      },
      [](Napi::Env, const AsyncTask::Kept& kept) { return kept[0].Value(); });
}

std::vector<uint32_t> GpuTiers::SlotList(const Napi::CallbackInfo& info, size_t i, uint32_t tier, const char* name) const {
  Napi::Env env = info.Env();
  if (i >= info.Length() || !info[i].IsTypedArray() || info[i].As<Napi::TypedArray>().TypedArrayType() != napi_uint32_array)
    throw Napi::TypeError::New(env, std::string(name) + " must be a Uint32Array");
  auto a = info[i].As<Napi::Uint32Array>();
  if (a.ElementLength() == 0 || a.ElementLength() > kMaxBatch) throw Napi::RangeError::New(env, std::string(name) + " must hold 1 to 4096 slots");
  std::vector<uint32_t> v(a.Data(), a.Data() + a.ElementLength());
  for (uint32_t s : v) CheckSlot(env, tier, s);
  return v;
}

// quantize(rawSlots: Uint32Array, quantSlots: Uint32Array): tier 0 -> tier 1, one launch.
Napi::Value GpuTiers::Quantize(const Napi::CallbackInfo& info) { return Convert(info, true); }

// dequantize(quantSlots: Uint32Array, rawSlots: Uint32Array): tier 1 -> tier 0, one launch.
Napi::Value GpuTiers::Dequantize(const Napi::CallbackInfo& info) { return Convert(info, false); }

Napi::Value GpuTiers::Convert(const Napi::CallbackInfo& info, bool quantize) {
  Napi::Env env = info.Env();
  CheckOpen(env);
  std::vector<uint32_t> from = SlotList(info, 0, quantize ? 0 : 1, quantize ? "rawSlots" : "quantSlots");
  std::vector<uint32_t> to = SlotList(info, 1, quantize ? 1 : 0, quantize ? "quantSlots" : "rawSlots");
  if (from.size() != to.size()) throw Napi::RangeError::New(env, "slot lists differ in length");
  return Run(env, {}, [this, from = std::move(from), to = std::move(to), quantize] {
    StagingGuard s(this);
    uint32_t n = static_cast<uint32_t>(from.size());
    std::memcpy(s->words->slots, from.data(), n * sizeof(uint32_t));
    std::memcpy(s->words->slots + kMaxBatch, to.data(), n * sizeof(uint32_t));
    CheckCuda(cudaMemcpyAsync(s->slots, s->words->slots, n * sizeof(uint32_t), cudaMemcpyHostToDevice, s->stream), "slot list");
    CheckCuda(cudaMemcpyAsync(s->slots + kMaxBatch, s->words->slots + kMaxBatch, n * sizeof(uint32_t), cudaMemcpyHostToDevice, s->stream), "slot list");
    char err[256] = {0};
    int rc = quantize ? sw_tq_quantize_cuda(&params_, raw_, raw_bytes_, s->slots, quant_, quant_bytes_, s->slots + kMaxBatch, n, s->stream, err, sizeof err)
                      : sw_tq_dequantize_cuda(&params_, quant_, quant_bytes_, s->slots, raw_, raw_bytes_, s->slots + kMaxBatch, n, s->stream, err, sizeof err);
    if (rc != SW_TQ_OK) throw CodedError(ErrorCode::kInternal, std::string(quantize ? "quantize" : "dequantize") + " kernel: " + err);
    CheckCuda(cudaStreamSynchronize(s->stream), quantize ? "quantize kernel" : "dequantize kernel");
  });
}

// dequantizeBytes(stored: Buffer, out?: Buffer): Promise<Buffer> with the raw block (in `out`
// when given), tiers untouched.
Napi::Value GpuTiers::DequantizeBytes(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CheckOpen(env);
  auto src = ArgBuffer(info, 0, "stored");
  if (src.Length() != quant_bytes_) throw Napi::RangeError::New(env, "stored must be one quantized block");
  auto out = OutBuffer(info, 1, raw_bytes_, "out");
  const uint8_t* in = src.Data();
  uint8_t* dst = out.Data();
  return Run(
      env, {out, src},
      [this, in, dst] {
        // bytes from outside the tiers may be in an older format: read them in theirs
        sw_tq_params p = params_;
        p.version = sw_tq_header_version(in);
        CheckQuantHeader(p, in);
        StagingGuard s(this);
        if (!s->raw_scratch) CheckCuda(cudaMalloc(&s->raw_scratch, raw_bytes_), "scratch block");
        if (!s->quant_scratch) CheckCuda(cudaMalloc(&s->quant_scratch, quant_bytes_), "scratch block");
        BlockToDevice(s.get(), s->quant_scratch, in, quant_bytes_, "copy to device");
        s->words->slots[0] = 0;
        CheckCuda(cudaMemcpyAsync(s->slots, s->words->slots, sizeof(uint32_t), cudaMemcpyHostToDevice, s->stream), "slot list");
        char err[256] = {0};
        if (sw_tq_dequantize_cuda(&p, s->quant_scratch, quant_bytes_, s->slots, s->raw_scratch, raw_bytes_, s->slots, 1, s->stream, err, sizeof err) != SW_TQ_OK)
          throw CodedError(ErrorCode::kInternal, std::string("dequantize kernel: ") + err);
        BlockToHost(s.get(), dst, s->raw_scratch, raw_bytes_, "dequantize bytes");
      },
      [](Napi::Env, const AsyncTask::Kept& kept) { return kept[0].Value(); });
}

// copy(fromTier, fromSlots: Uint32Array, toTier, toSlots: Uint32Array): quantized blocks
// between tier 1 (HBM) and tier 2 (pinned host): one DMA transfer per run of consecutive
// slots, one synchronization for them all.
Napi::Value GpuTiers::Copy(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CheckOpen(env);
  uint32_t from_tier = ArgU32(info, 0, "fromTier");
  uint32_t to_tier = ArgU32(info, 2, "toTier");
  if (from_tier < 1 || to_tier < 1 || from_tier == to_tier) throw Napi::RangeError::New(env, "copies run between tier 1 and tier 2");
  std::vector<uint32_t> from = SlotList(info, 1, from_tier, "fromSlots");
  std::vector<uint32_t> to = SlotList(info, 3, to_tier, "toSlots");
  if (from.size() != to.size()) throw Napi::RangeError::New(env, "slot lists differ in length");
  return Run(env, {}, [this, from = std::move(from), to = std::move(to), from_tier, to_tier] {
    StagingGuard s(this);
    // Runs of consecutive slots on both sides go as one DMA transfer.
    std::vector<void*> dsts;
    std::vector<const void*> srcs;
    std::vector<size_t> sizes;
    for (size_t i = 0; i < from.size();) {
      size_t run = 1;
      while (i + run < from.size() && from[i + run] == from[i] + run && to[i + run] == to[i] + run) run++;
      dsts.push_back(SlotAddress(to_tier, to[i]));
      srcs.push_back(SlotAddress(from_tier, from[i]));
      sizes.push_back(run * quant_bytes_);
      i += run;
    }
    // One batched call where the driver has it (CUDA 12.8+): per-copy submission costs
    // about a fifth of the link's time at half-megabyte blocks.
    cudaMemcpyAttributes attrs{};
    attrs.srcAccessOrder = cudaMemcpySrcAccessOrderStream;
    size_t attrs_index = 0;
    cudaError_t rc = cudaMemcpyBatchAsync(dsts.data(), srcs.data(), sizes.data(), dsts.size(), &attrs, &attrs_index, 1, s->stream);
    if (rc == cudaErrorNotSupported || rc == cudaErrorCallRequiresNewerDriver) {
      (void)cudaGetLastError();
      for (size_t i = 0; i < dsts.size(); i++) CheckCuda(cudaMemcpyAsync(dsts[i], srcs[i], sizes[i], cudaMemcpyDefault, s->stream), "copy between tiers");
    } else {
      CheckCuda(rc, "batched copy between tiers");
    }
    CheckCuda(cudaStreamSynchronize(s->stream), "copy between tiers");
  });
}

void GpuTiers::CheckQuantHeader(const sw_tq_params& p, const uint8_t* host_header) const {
  char err[256] = {0};
  int rc = sw_tq_check_header(&p, host_header, err, sizeof err);
  if (rc == SW_TQ_EFORMAT) throw CodedError(ErrorCode::kQuantFormat, err);
  if (rc != SW_TQ_OK) throw CodedError(ErrorCode::kQuantMismatch, err);
}

// spill(tier, slot, diskSlot, blockId, generation, prefixHash?): a block of any tier (the store
// spills tier 1 or the host tier 2) to its disk slot, staged in device memory, with a
// GPU-computed checksum (and the prefix hash of a committed block) in the slot header,
// bracketed by the slot's write mark.
Napi::Value GpuTiers::Spill(const Napi::CallbackInfo& info) {
  TierDiskRequest a = TierDiskArgs(info);
  PrefixHashArg hash = ArgPrefixHash(info, 5);
  DiskRequest r = a.disk;
  const uint8_t* src = a.slot_address;
  InjectedFault fault = faults_.Take(true);
  return RunDisk(info.Env(), DiskDirection::kWrite, {}, [this, r, src, hash, fault] {
    std::string what = "write of slot " + std::to_string(r.disk_slot) + " in " + path_;
    fault.Apply(what);
    StagingGuard s(this);
    size_t io = RoundUp(kSlotHeaderBytes + r.bytes, kDiskAlign);
    uint8_t* payload = s->dev + kSlotHeaderBytes;
    CheckCuda(cudaMemcpyAsync(payload, src, r.bytes, cudaMemcpyDefault, s->stream), "stage block");
    CheckCuda(cudaMemsetAsync(payload + r.bytes, 0, io - kSlotHeaderBytes - r.bytes, s->stream), "stage padding");
    CheckCuda(static_cast<cudaError_t>(sw_mixsum64_cuda(payload, r.bytes, s->sum, s->stream)), "checksum kernel");
    CheckCuda(cudaMemcpyAsync(&s->words->sum, s->sum, sizeof s->words->sum, cudaMemcpyDeviceToHost, s->stream), "checksum");
    CheckCuda(cudaStreamSynchronize(s->stream), "stage block");
    s->words->header = MakeSlotHeader(r.block_id, r.generation, static_cast<uint32_t>(r.bytes), ChecksumKind::kMixSum64, FoldChecksum(s->words->sum), hash.get());
    uint64_t offset = static_cast<uint64_t>(r.disk_slot) * disk_slot_bytes_;
    marks_.Begin(r.disk_slot, what);
    CheckCuda(cudaMemcpyAsync(s->dev, &s->words->header, sizeof s->words->header, cudaMemcpyHostToDevice, s->stream), "stage header");
    io_->Write(file_.fd, offset, io, s->dev, 0, s->stream, what);
    marks_.End(r.disk_slot, what);
  });
}

// fill(tier, slot, diskSlot, blockId, generation): a disk slot into a tier slot, verified first.
Napi::Value GpuTiers::Fill(const Napi::CallbackInfo& info) {
  TierDiskRequest a = TierDiskArgs(info);
  DiskRequest r = a.disk;
  uint8_t* dst = a.slot_address;
  uint32_t tier = a.tier;
  InjectedFault fault = faults_.Take(false);
  return RunDisk(info.Env(), DiskDirection::kRead, {}, [this, r, dst, tier, fault] {
    StagingGuard s(this);
    ReadVerified(s.get(), r, tier != 0, fault);
    CheckCuda(cudaMemcpyAsync(dst, s->dev + kSlotHeaderBytes, r.bytes, cudaMemcpyDefault, s->stream), "copy into tier");
    CheckCuda(cudaStreamSynchronize(s->stream), "copy into tier");
  });
}

// readDisk(diskSlot, blockId, generation): Promise<Buffer> with the stored (quantized) block.
Napi::Value GpuTiers::ReadDisk(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CheckOpen(env);
  DiskRequest r = DiskArgs(info, 0, 1);
  auto out = Napi::Buffer<uint8_t>::New(env, r.bytes);
  uint8_t* dst = out.Data();
  InjectedFault fault = faults_.Take(false);
  return RunDisk(
      env, DiskDirection::kRead, {out},
      [this, r, dst, fault] {
        StagingGuard s(this);
        ReadVerified(s.get(), r, true, fault);
        BlockToHost(s.get(), dst, s->dev + kSlotHeaderBytes, r.bytes, "copy from device");
      },
      [](Napi::Env, const AsyncTask::Kept& kept) { return kept[0].Value(); });
}

GpuTiers::DiskRequest GpuTiers::DiskArgs(const Napi::CallbackInfo& info, size_t i, uint32_t tier) const {
  Napi::Env env = info.Env();
  DiskRequest r;
  r.disk_slot = ArgU32(info, i, "diskSlot");
  r.block_id = ArgU64(info, i + 1, "blockId");
  r.generation = ArgU64(info, i + 2, "generation");
  r.bytes = TierBlockBytes(tier);
  if (r.disk_slot >= disk_slots_) throw Napi::RangeError::New(env, "diskSlot " + std::to_string(r.disk_slot) + " is past the file's " + std::to_string(disk_slots_) + " slots");
  if (kSlotHeaderBytes + r.bytes > disk_slot_bytes_) throw Napi::RangeError::New(env, "the block does not fit a disk slot");
  return r;
}

GpuTiers::TierDiskRequest GpuTiers::TierDiskArgs(const Napi::CallbackInfo& info) const {
  CheckOpen(info.Env());
  uint32_t tier = ArgU32(info, 0, "tier");
  uint32_t slot = ArgU32(info, 1, "slot");
  CheckSlot(info.Env(), tier, slot);
  return {tier, SlotAddress(tier, slot), DiskArgs(info, 2, tier)};
}

// Reads a disk slot into the staging buffer and verifies header and payload checksum there;
// the caller copies the payload out only after this returns.
void GpuTiers::ReadVerified(Staging* s, const DiskRequest& r, bool quantized, const InjectedFault& fault) {
  std::string what = "read of slot " + std::to_string(r.disk_slot) + " in " + path_;
  fault.Apply(what);
  size_t io = RoundUp(kSlotHeaderBytes + r.bytes, kDiskAlign);
  uint64_t offset = static_cast<uint64_t>(r.disk_slot) * disk_slot_bytes_;
  uint8_t* payload = s->dev + kSlotHeaderBytes;
  size_t got = io_->Read(file_.fd, offset, io, s->dev, 0, s->stream, what);
  if (got < io) throw CodedError(ErrorCode::kIoError, what + ": short read, " + std::to_string(got) + " of " + std::to_string(io) + " bytes");
  CheckCuda(cudaMemcpyAsync(&s->words->header, s->dev, sizeof s->words->header, cudaMemcpyDeviceToHost, s->stream), "read header");
  CheckCuda(cudaStreamSynchronize(s->stream), "read header");
  const SlotHeader h = s->words->header;
  VerifySlotHeader(h, r.block_id, r.generation, static_cast<uint32_t>(r.bytes), what);
  if (KindOf(h) != ChecksumKind::kMixSum64) throw CodedError(ErrorCode::kChecksumMismatch, what + ": slot was not written by the GPU path");
  CheckCuda(static_cast<cudaError_t>(sw_mixsum64_cuda(payload, r.bytes, s->sum, s->stream)), "checksum kernel");
  CheckCuda(cudaMemcpyAsync(&s->words->sum, s->sum, sizeof s->words->sum, cudaMemcpyDeviceToHost, s->stream), "checksum");
  if (quantized) {
    CheckCuda(cudaMemcpyAsync(s->words->quant_header, payload, SW_TQ_HEADER_BYTES, cudaMemcpyDeviceToHost, s->stream), "read block header");
  }
  CheckCuda(cudaStreamSynchronize(s->stream), "checksum");
  if (FoldChecksum(s->words->sum) != h.payload_checksum) ThrowPayloadMismatch(what);
  // the tier's kernels code this build's format only
  if (quantized) CheckQuantHeader(params_, s->words->quant_header);
}

Napi::Value GpuTiers::InjectFault(const Napi::CallbackInfo& info) { return faults_.Arm(info); }

Napi::Value GpuTiers::Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("device", DeviceToJs(env, device_identity_));
  o.Set("io", io_->Name());
  o.Set("cufileMode", io_->CufileMode());
  o.Set("ioReason", io_->reason());
  o.Set("path", path_);
  o.Set("direct", file_.direct);
  o.Set("directReason", file_.direct_reason);
  o.Set("preallocated", file_.preallocated);
  o.Set("rawArenaBytes", static_cast<double>(static_cast<uint64_t>(raw_slots_) * raw_bytes_));
  o.Set("quantArenaBytes", static_cast<double>(static_cast<uint64_t>(quant_slots_) * quant_bytes_));
  o.Set("hostArenaBytes", static_cast<double>(static_cast<uint64_t>(host_slots_) * quant_bytes_));
  o.Set("stagingBuffers", static_cast<double>(all_staging_.size()));
  o.Set("rawSlotBytes", static_cast<double>(raw_bytes_));
  o.Set("quantSlotBytes", static_cast<double>(quant_bytes_));
  return o;
}

// ipcHandle(tier): Buffer with the cudaIpcMemHandle_t of a tier's arena, which another
// process on the same GPU maps once with cudaIpcOpenMemHandle and addresses by slot.
Napi::Value GpuTiers::IpcHandle(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CheckOpen(env);
  uint32_t tier = ArgU32(info, 0, "tier");
  if (tier > 1) throw Napi::RangeError::New(env, "tier must be 0 (raw) or 1 (quantized)");
  cudaIpcMemHandle_t h;
  cudaError_t rc = cudaSetDevice(device_);
  if (rc == cudaSuccess) rc = cudaIpcGetMemHandle(&h, tier == 0 ? raw_ : quant_);
  if (rc != cudaSuccess) throw NewError(env, ErrorCode::kInternal, std::string("cudaIpcGetMemHandle: ") + cudaGetErrorString(rc));
  return Napi::Buffer<uint8_t>::Copy(env, reinterpret_cast<const uint8_t*>(&h), sizeof h);
}

Napi::Value GpuTiers::Close(const Napi::CallbackInfo& info) {
  if (in_flight_.load() > 0) throw NewError(info.Env(), ErrorCode::kBusy, "GPU tiers have work in flight");
  Release();
  return info.Env().Undefined();
}

Napi::Value GpuTiers::TakeDiskRuns(const Napi::CallbackInfo& info) { return disk_queue_->TakeRuns(info.Env()); }

// Runs work off the JS thread, counting it so that Close() never frees memory in use.
Napi::Promise GpuTiers::Run(Napi::Env env, std::vector<Napi::Value> keep, AsyncTask::Work work, AsyncTask::Result result) {
  return RunOnDevice(env, Value(), std::move(keep), in_flight_, device_, std::move(work), std::move(result));
}

Napi::Promise GpuTiers::RunDisk(Napi::Env env, DiskDirection direction, std::vector<Napi::Value> keep, AsyncTask::Work work,
                                AsyncTask::Result result) {
  in_flight_++;
  keep.push_back(Value());
  return disk_queue_->Run(env, direction, std::move(keep), OnDevice(in_flight_, device_, std::move(work)), std::move(result));
}

}  // namespace spillway
#endif  // SW_WITH_CUDA
