// What the machine offers: the visible GPUs, the one in use (its free memory), CUDA driver
// and runtime, cuFile and its mode. Used by the runtime to choose a backend and by
// `spillway doctor`. Never throws on a missing GPU, driver or library: each absence is
// reported with its reason. Only the device in use gets a CUDA context: the others are
// listed from their properties, so a runtime per GPU holds memory on its own GPU alone.
#include "gpu/probe.h"

#include "core/args.h"
#include "core/async_task.h"
#include "core/errors.h"
#include "io/cufile_api.h"

#ifdef SW_WITH_CUDA
#include <cuda_runtime_api.h>

#include "gpu/device_task.h"
#endif
#include <vector>

namespace spillway {
namespace {

struct GpuInfo {
  bool present = false;
  std::string error;
  int driver_version = 0, runtime_version = 0, count = 0;
  int device = 0;  // the index asked about
  std::string name, pci_bus_id;
  int major = 0, minor = 0;
  size_t total_bytes = 0, free_bytes = 0;
};

struct CufileInfo {
  std::string status;  // "not-found" | "driver-error" | "compat" | "gds"
  std::string detail;
  std::string nvfs_version;
};

struct ProbeResult {
  GpuInfo gpu;
#ifdef SW_WITH_CUDA
  std::vector<DeviceIdentity> gpus;  // every visible device, in index order
#endif
  CufileInfo cufile;
};

void ProbeGpu(ProbeResult& r) {
  GpuInfo& g = r.gpu;
#ifdef SW_WITH_CUDA
  cudaDriverGetVersion(&g.driver_version);
  cudaRuntimeGetVersion(&g.runtime_version);
  cudaError_t rc = cudaGetDeviceCount(&g.count);
  if (rc != cudaSuccess || g.count == 0) {
    g.error = rc != cudaSuccess ? std::string(cudaGetErrorName(rc)) + ": " + cudaGetErrorString(rc) : "no CUDA device";
    g.count = 0;
    return;
  }
  try {
    for (int i = 0; i < g.count; i++) r.gpus.push_back(IdentifyDevice(i));
  } catch (const CodedError& e) {
    g.error = e.what();
    return;
  }
  if (g.device >= g.count) {
    g.error = "device " + std::to_string(g.device) + " is not visible: " + std::to_string(g.count) + " visible";
    return;
  }
  if ((rc = cudaSetDevice(g.device)) != cudaSuccess || (rc = cudaMemGetInfo(&g.free_bytes, &g.total_bytes)) != cudaSuccess) {
    g.error = std::string(cudaGetErrorName(rc)) + ": " + cudaGetErrorString(rc);
    return;
  }
  const DeviceIdentity& d = r.gpus[g.device];
  g.present = true;
  g.name = d.name;
  g.pci_bus_id = d.pci_bus_id;
  g.major = d.major;
  g.minor = d.minor;
#else
  g.error = "addon built without CUDA (nvcc was not found at build time)";
#endif
}

void ProbeCufile(CufileInfo& c, bool gpu_present) {
  std::string why;
  const cufile::Api* api = cufile::Load(&why);
  if (!api) {
    c.status = "not-found";
    c.detail = why;
    return;
  }
  c.nvfs_version = cufile::NvfsVersion();
  if (!gpu_present) {
    c.status = "driver-error";
    c.detail = "libcufile found but there is no usable GPU";
    return;
  }
  if (!cufile::Open(&why)) {
    c.status = "driver-error";
    c.detail = why;
    return;
  }
  // Without the nvidia-fs kernel module cuFile can only run its own POSIX path.
  if (c.nvfs_version.empty()) {
    c.status = "compat";
    c.detail = "nvidia-fs is not loaded: cuFile runs in compatibility mode (POSIX reads and writes through bounce buffers)";
  } else {
    c.status = "gds";
    c.detail = "nvidia-fs " + c.nvfs_version + " loaded: GPUDirect peer-to-peer DMA available";
  }
}

Napi::Value ToJs(Napi::Env env, const ProbeResult& r) {
  Napi::Object o = Napi::Object::New(env);
#ifdef SW_WITH_CUDA
  o.Set("cudaBuilt", true);
#else
  o.Set("cudaBuilt", false);
#endif
  Napi::Object g = Napi::Object::New(env);
  g.Set("present", r.gpu.present);
  g.Set("error", r.gpu.error);
  g.Set("count", r.gpu.count);
  g.Set("device", r.gpu.device);
  g.Set("name", r.gpu.name);
  g.Set("pciBusId", r.gpu.pci_bus_id);
  g.Set("computeCapability", std::to_string(r.gpu.major) + "." + std::to_string(r.gpu.minor));
  g.Set("totalBytes", static_cast<double>(r.gpu.total_bytes));
  g.Set("freeBytes", static_cast<double>(r.gpu.free_bytes));
  g.Set("driverVersion", r.gpu.driver_version);
  g.Set("runtimeVersion", r.gpu.runtime_version);
  o.Set("gpu", g);
  Napi::Array all = Napi::Array::New(env);
#ifdef SW_WITH_CUDA
  for (uint32_t i = 0; i < r.gpus.size(); i++) all.Set(i, DeviceToJs(env, r.gpus[i]));
#endif
  o.Set("gpus", all);
  Napi::Object c = Napi::Object::New(env);
  c.Set("status", r.cufile.status);
  c.Set("detail", r.cufile.detail);
  c.Set("nvfsVersion", r.cufile.nvfs_version);
  o.Set("cufile", c);
  return o;
}

// probe(device = 0): Promise<ProbeResult>, `device` the visible index whose memory is
// reported. Off the JS thread: driver start-up can take a while.
Napi::Value Probe(const Napi::CallbackInfo& info) {
  auto result = std::make_shared<ProbeResult>();
  if (info.Length() > 0 && !info[0].IsUndefined()) result->gpu.device = static_cast<int>(ArgU32(info, 0, "device"));
  return AsyncTask::Run(
      info.Env(), {},
      [result] {
        ProbeGpu(*result);
        ProbeCufile(result->cufile, result->gpu.present);
      },
      [result](Napi::Env env, const AsyncTask::Kept&) { return ToJs(env, *result); });
}

}  // namespace

void InitProbe(Napi::Env env, Napi::Object exports) {
  exports.Set("probe", Napi::Function::New(env, Probe, "probe"));
}

}  // namespace spillway
