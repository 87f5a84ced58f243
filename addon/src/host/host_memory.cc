// Host memory for the upper tiers on the host backend: one page-aligned allocation per
// tier, carved into slots by the runtime, so that slots can go straight to O_DIRECT I/O.
#include "host/host_memory.h"

#include <cstdlib>
#include <cstring>

#include "core/args.h"
#include "core/async_task.h"
#include "core/errors.h"
#include "io/checksum.h"

namespace spillway {
namespace {

// allocArena(bytes): Buffer, 4096-aligned, zero-filled, freed when the Buffer is collected.
Napi::Value AllocArena(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint64_t bytes = ArgU64(info, 0, "bytes");
  if (bytes == 0) throw Napi::RangeError::New(env, "bytes must be positive");
  void* p = nullptr;
  if (posix_memalign(&p, 4096, bytes) != 0)
    throw NewError(env, ErrorCode::kOutOfMemory, "cannot allocate a host arena of " + std::to_string(bytes) + " bytes");
  std::memset(p, 0, bytes);
  return Napi::Buffer<uint8_t>::New(env, static_cast<uint8_t*>(p), bytes, [](Napi::Env, uint8_t* data) { std::free(data); });
}

// crc32c(buffer, offset?, length?): number
Napi::Value Crc32cJs(const Napi::CallbackInfo& info) {
  auto buf = ArgBuffer(info, 0, "buffer");
  uint64_t off = info.Length() > 1 ? ArgU64(info, 1, "offset") : 0;
  uint64_t len = info.Length() > 2 ? ArgU64(info, 2, "length") : buf.Length() - off;
  CheckRange(info.Env(), buf, off, len, "buffer");
  return Napi::Number::New(info.Env(), Crc32c(buf.Data() + off, len));
}

}  // namespace

void InitHostMemory(Napi::Env env, Napi::Object exports) {
  exports.Set("allocArena", Napi::Function::New(env, AllocArena, "allocArena"));
  exports.Set("crc32c", Napi::Function::New(env, Crc32cJs, "crc32c"));
}

}  // namespace spillway
