// What the addon's device-memory classes (GpuTiers, DeviceArena) share: CUDA error
// checks that become coded errors, and running work off the JS thread on the device while
// counting it, so that freeing device memory can refuse while work is in flight.
#pragma once
#ifdef SW_WITH_CUDA
#include <cuda_runtime.h>
#include <napi.h>

#include <atomic>
#include <string>
#include <vector>

#include "async_task.h"

namespace spillway {

// Throws OUT_OF_MEMORY or INTERNAL naming `what` when `rc` is an error.
void CheckCuda(cudaError_t rc, const std::string& what);

// AsyncTask::Run on device 0, keeping `self` alive and counting the task in `in_flight`.
Napi::Promise RunOnDevice(Napi::Env env, Napi::Object self, std::vector<Napi::Value> keep, std::atomic<int>& in_flight,
                          AsyncTask::Work work, AsyncTask::Result result = nullptr);

}  // namespace spillway
#endif
