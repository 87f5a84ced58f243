// What the addon's device-memory classes (GpuTiers, DeviceArena) share: CUDA error
// checks that become coded errors, the device they run on (made current on each thread
// that touches CUDA), and running work off the JS thread on that device while counting
// it, so that freeing device memory can refuse while work is in flight.
#pragma once
#ifdef SW_WITH_CUDA
#include <cuda_runtime.h>
#include <napi.h>

#include <atomic>
#include <string>
#include <vector>

#include "core/async_task.h"

namespace spillway {

// Throws OUT_OF_MEMORY or INTERNAL naming `what` when `rc` is an error.
void CheckCuda(cudaError_t rc, const std::string& what);

// CUDA keeps the current device per thread, and the addon's work runs on whichever worker
// thread is free: every entry point that touches CUDA makes its object's device current.
void UseDevice(int device);

// Which GPU an index names, within the visible set (CUDA_VISIBLE_DEVICES). Reads the
// device's properties only: creates no context on it.
struct DeviceIdentity {
  int index = 0;
  std::string name;
  std::string pci_bus_id;
  int major = 0, minor = 0;
  size_t total_bytes = 0;
};
DeviceIdentity IdentifyDevice(int device);
Napi::Object DeviceToJs(Napi::Env env, const DeviceIdentity& d);

// Reads options.device: a visible device index, 0 when absent.
int DeviceOption(Napi::Env env, const Napi::Object& options);

// `work` run on `device`; `in_flight`, counted up when it was queued, is counted down as it ends.
AsyncTask::Work OnDevice(std::atomic<int>& in_flight, int device, AsyncTask::Work work);

// AsyncTask::Run on `device`, keeping `self` alive and counting the task in `in_flight`.
Napi::Promise RunOnDevice(Napi::Env env, Napi::Object self, std::vector<Napi::Value> keep, std::atomic<int>& in_flight,
                          int device, AsyncTask::Work work, AsyncTask::Result result = nullptr);

}  // namespace spillway
#endif
