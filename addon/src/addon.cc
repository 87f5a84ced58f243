// Module entry: wires the bindings. Policy lives in runtime/; this layer converts
// arguments, runs work off the JS thread and owns native resources.
#include <napi.h>

#include "core/async_task.h"
#include "core/errors.h"
#include "gpu/device_arena.h"
#include "gpu/gpu_tiers.h"
#include "gpu/probe.h"
#include "host/host_memory.h"
#include "host/quantize.h"
#include "io/disk_io.h"
#include "io/slot_file.h"

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) {
  spillway::InitErrors(env, exports);
  spillway::InitHostMemory(env, exports);
  spillway::InitQuantize(env, exports);
  spillway::InitProbe(env, exports);
  spillway::InitSlotScan(env, exports);
  exports.Set("SlotFile", spillway::SlotFile::Define(env));
  exports.Set("taskTimings", Napi::Function::New(env, spillway::AsyncTask::TakeTimings, "taskTimings"));
#ifdef SW_WITH_CUDA
  exports.Set("GpuTiers", spillway::GpuTiers::Define(env));
  exports.Set("DeviceArena", spillway::DeviceArena::Define(env));
#endif
  return exports;
}

NODE_API_MODULE(spillway, InitAddon)
