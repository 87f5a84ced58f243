#ifdef SW_WITH_CUDA
#include "device_task.h"

namespace spillway {

void CheckCuda(cudaError_t rc, const std::string& what) {
  if (rc == cudaSuccess) return;
  throw CodedError(rc == cudaErrorMemoryAllocation ? "OUT_OF_MEMORY" : "INTERNAL",
                   what + ": " + cudaGetErrorName(rc) + " (" + cudaGetErrorString(rc) + ")");
}

Napi::Promise RunOnDevice(Napi::Env env, Napi::Object self, std::vector<Napi::Value> keep, std::atomic<int>& in_flight,
                          AsyncTask::Work work, AsyncTask::Result result) {
  in_flight++;
  keep.push_back(self);
  return AsyncTask::Run(
      env, std::move(keep),
      [&in_flight, work = std::move(work)] {
        struct Done {
          std::atomic<int>& n;
          ~Done() { n--; }
        } done{in_flight};
        CheckCuda(cudaSetDevice(0), "cudaSetDevice");
        work();
      },
      std::move(result));
}

}  // namespace spillway
#endif  // SW_WITH_CUDA
