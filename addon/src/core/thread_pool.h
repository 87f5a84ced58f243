// A fixed pool of threads for data-parallel work (quantizing a block's groups). Callers
// are already off the JS thread; parallel_for blocks its caller until every chunk is done
// and the caller works on chunks too, so nested or concurrent callers cannot starve.
#pragma once
#include <cstdint>
#include <functional>

namespace spillway {

unsigned PoolThreads();
void ParallelFor(uint32_t n, const std::function<void(uint32_t begin, uint32_t end)>& fn);

}  // namespace spillway
