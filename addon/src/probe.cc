// What the machine offers: GPU, CUDA driver and runtime, cuFile and its mode. Used by the
// runtime to choose a backend and by `spillway doctor`. Never throws on a missing GPU,
// driver or library: each absence is reported with its reason.
#include "probe.h"

#include "async_task.h"
#include "cufile_api.h"

#ifdef SW_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace spillway {
namespace {

struct GpuInfo {
  bool present = false;
  std::string error;
  int driver_version = 0, runtime_version = 0, count = 0;
  std::string name;
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
  CufileInfo cufile;
};

void ProbeGpu(GpuInfo& g) {
#ifdef SW_WITH_CUDA
  cudaDriverGetVersion(&g.driver_version);
  cudaRuntimeGetVersion(&g.runtime_version);
  cudaError_t rc = cudaGetDeviceCount(&g.count);
  if (rc != cudaSuccess || g.count == 0) {
    g.error = rc != cudaSuccess ? std::string(cudaGetErrorName(rc)) + ": " + cudaGetErrorString(rc) : "no CUDA device";
    g.count = 0;
    return;
  }
  cudaDeviceProp prop{};
  if ((rc = cudaGetDeviceProperties(&prop, 0)) != cudaSuccess || (rc = cudaSetDevice(0)) != cudaSuccess ||
      (rc = cudaMemGetInfo(&g.free_bytes, &g.total_bytes)) != cudaSuccess) {
    g.error = std::string(cudaGetErrorName(rc)) + ": " + cudaGetErrorString(rc);
    return;
  }
  g.present = true;
  g.name = prop.name;
  g.major = prop.major;
  g.minor = prop.minor;
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
  g.Set("name", r.gpu.name);
  g.Set("computeCapability", std::to_string(r.gpu.major) + "." + std::to_string(r.gpu.minor));
  g.Set("totalBytes", static_cast<double>(r.gpu.total_bytes));
  g.Set("freeBytes", static_cast<double>(r.gpu.free_bytes));
  g.Set("driverVersion", r.gpu.driver_version);
  g.Set("runtimeVersion", r.gpu.runtime_version);
  o.Set("gpu", g);
  Napi::Object c = Napi::Object::New(env);
  c.Set("status", r.cufile.status);
  c.Set("detail", r.cufile.detail);
  c.Set("nvfsVersion", r.cufile.nvfs_version);
  o.Set("cufile", c);
  return o;
}

// probe(): Promise<ProbeResult>. Off the JS thread: driver start-up can take a while.
Napi::Value Probe(const Napi::CallbackInfo& info) {
  auto result = std::make_shared<ProbeResult>();
  return AsyncTask::Run(
      info.Env(), {},
      [result] {
        ProbeGpu(result->gpu);
        ProbeCufile(result->cufile, result->gpu.present);
      },
      [result](Napi::Env env, const AsyncTask::Kept&) { return ToJs(env, *result); });
}

}  // namespace

void InitProbe(Napi::Env env, Napi::Object exports) {
  exports.Set("probe", Napi::Function::New(env, Probe, "probe"));
}

}  // namespace spillway
