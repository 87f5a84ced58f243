#ifdef SW_WITH_CUDA
#include "gpu/device_task.h"

#include "core/errors.h"

namespace spillway {

void CheckCuda(cudaError_t rc, const std::string& what) {
  if (rc == cudaSuccess) return;
  throw CodedError(rc == cudaErrorMemoryAllocation ? ErrorCode::kOutOfMemory : ErrorCode::kInternal,
                   what + ": " + cudaGetErrorName(rc) + " (" + cudaGetErrorString(rc) + ")");
}

void UseDevice(int device) { CheckCuda(cudaSetDevice(device), "cudaSetDevice(" + std::to_string(device) + ")"); }

DeviceIdentity IdentifyDevice(int device) {
  cudaDeviceProp prop{};
  CheckCuda(cudaGetDeviceProperties(&prop, device), "properties of device " + std::to_string(device));
  char bus[32] = {0};
  CheckCuda(cudaDeviceGetPCIBusId(bus, sizeof bus, device), "PCI bus id of device " + std::to_string(device));
  DeviceIdentity d;
  d.index = device;
  d.name = prop.name;
  d.pci_bus_id = bus;
  d.major = prop.major;
  d.minor = prop.minor;
  d.total_bytes = prop.totalGlobalMem;
  return d;
}

Napi::Object DeviceToJs(Napi::Env env, const DeviceIdentity& d) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("index", d.index);
  o.Set("name", d.name);
  o.Set("pciBusId", d.pci_bus_id);
  o.Set("computeCapability", std::to_string(d.major) + "." + std::to_string(d.minor));
  o.Set("totalBytes", static_cast<double>(d.total_bytes));
  return o;
}

int DeviceOption(Napi::Env env, const Napi::Object& options) {
  Napi::Value v = options.Get("device");
  if (v.IsUndefined()) return 0;
  double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
  if (d < 0 || d > 1024 || d != static_cast<int>(d)) throw Napi::TypeError::New(env, "options.device must be a device index");
  return static_cast<int>(d);
}

AsyncTask::Work OnDevice(std::atomic<int>& in_flight, int device, AsyncTask::Work work) {
  return CountedDown(in_flight, [device, work = std::move(work)] {
    UseDevice(device);
    work();
  });
}

Napi::Promise RunOnDevice(Napi::Env env, Napi::Object self, std::vector<Napi::Value> keep, std::atomic<int>& in_flight,
                          int device, AsyncTask::Work work, AsyncTask::Result result) {
  in_flight++;
  keep.push_back(self);
  return AsyncTask::Run(env, std::move(keep), OnDevice(in_flight, device, std::move(work)), std::move(result));
}

}  // namespace spillway
#endif  // SW_WITH_CUDA
