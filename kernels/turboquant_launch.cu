// Host side of the CUDA quantizer: checks, the launch parameters, the choice between the
// general kernels and the head_dim-128 ones (and format 3's matrix and format 4's halves kernels beside either), and the launches. It sees the kernels only as
// pointers (tq_cuda_params.h), never their templates.
#include <cstdio>
#include <map>
#include <mutex>
#include <tuple>

#include "tq_cuda_params.h"

namespace tq_cuda {
namespace {

// Host: whether the fast path takes these parameters, and its arguments.
bool fast_eligible(const sw_tq_params* p) {
  return tq_version(p) >= 2u && p->head_dim == (uint32_t)kFastD && p->tokens <= 32 && (p->dtype == SW_DTYPE_BF16 || p->dtype == SW_DTYPE_FP16) &&
         sw_tq_raw_bytes(p) < (1ull << 32) && sw_tq_quantized_bytes(p) < (1ull << 32);
}

// The arguments of the launch that codes kinds [kv_first, kv_first + kv_count) of layers
// [layer0, layer0 + layers), all outer or all inner.
void fast_args(bool quant, const sw_tq_params* p, const Args& a, uint32_t layer0, uint32_t layers, uint32_t kv_first,
               uint32_t kv_count, FastArgs& fa) {
  fa.a = a;
  const tq_kind* kinds = &a.layout.kind[2 * tq_outer_layer(p, layer0)];  // this class's K and V
  const tq_kind& k = kinds[kv_first];
  // sign tables of the kind coded: one 128-value sub-vector, or two of 64
  for (uint32_t sub = 0; sub < k.nsub; ++sub) {
    const tq_sub_plan& sp = k.sub[sub];
    auto mask = [](const uint32_t* words, uint32_t j) { return ((words[j / 32] >> (j % 32)) & 1u) << 31; };
    for (uint32_t j = 0; j < sp.dim; ++j) {
      for (int r = 0; r < kFastRounds; ++r) fa.rot[r][sub * sp.dim + j] = mask(sp.rot_signs[r], j);
      fa.qjl[sub * sp.dim + j] = mask(sp.qjl_signs, j);
      fa.dq[sub * sp.dim + j] = mask(sp.rot_signs[0], j) ? -sp.inv_gain : sp.inv_gain;
    }
  }
  // codebooks and centroid tables in the code of the kind's first (at fractional rates the
  // wider) sub-vector: nb magnitude bits, then the sign
  for (uint32_t t = 0; t < 4; ++t) {
    const tq_kind& kt = kinds[t / 2];
    const tq_sub_plan& sp = kt.sub[t % 2];
    const uint32_t nb = kt.sub[0].mse_bits > 1 ? kt.sub[0].mse_bits - 1 : 0;
    const uint32_t levels = sp.mse_bits == 0 ? 0 : 1u << (sp.mse_bits - 1);
    for (uint32_t code = 0; code < 16; ++code) {
      const uint32_t mag = code & ((1u << nb) - 1u);
      const float c = mag < levels ? sp.cent[mag] : 0.0f;
      fa.cent[t][code] = (code >> nb) & 1u ? -c : c;
    }
    if (t / 2 != kv_first) continue;
    FastBook& bk = fa.book[t % 2];
    for (uint32_t i = 0; i < 7; ++i) bk.thr[i] = i + 1 < levels ? sp.thr[i] : __builtin_inff();
    for (uint32_t i = 0; i < 8; ++i) bk.cent[i] = i < levels ? sp.cent[i] : 0.0f;
    bk.sign = levels ? 0x80000000u : 0u;
  }
  fa.kv_first = kv_first;
  fa.kv_count = kv_count;
  // integer rates code 16 rows per pass of a warp, fractional rates 32
  fa.groups_per_tile = (k.fractional ? 32 : 16) / p->tokens;
  if (fa.groups_per_tile < 1) fa.groups_per_tile = 1;
  if (fa.groups_per_tile > p->kv_heads) fa.groups_per_tile = p->kv_heads;
  fa.tiles_per_seg.set((p->kv_heads + fa.groups_per_tile - 1) / fa.groups_per_tile);
  fa.tiles_per_block.set(layers * kv_count * fa.tiles_per_seg.d);
  fa.tokens.set(p->tokens);
  fa.kind = k;
  const uint32_t norms_end = k.norms_off + p->tokens * k.nsub * 4;
  fa.padded = norms_end != k.rnorms_off || (k.qjl && k.rnorms_off + p->tokens * k.nsub * 4 != k.codes_off) ||
              k.codes_off + p->tokens * k.token_bytes != k.record_bytes;
  fa.layer0 = layer0;
  fa.range_off = (uint32_t)tq_layer_offset(p, &a.layout, layer0);
  fa.layer_q_bytes = p->kv_heads * (kinds[0].record_bytes + kinds[1].record_bytes);
  fa.values_off = p->kv_heads * kinds[0].record_bytes;
  fa.tile_bytes = fa.groups_per_tile * p->tokens * kFastRow;
  fa.warp_smem = (quant ? 2 : 1) * fa.tile_bytes + (k.fractional ? tq_align16(fast_scratch_bytes(fa.groups_per_tile)) : 0u);
}

// Launches fn, whose warps take work items in turn (items_per_block of each block), over a's
// blocks in chunks whose items number below 2^31 (FastDiv's range): each chunk's slots go to
// the kernel's arguments k (k.a) and its item count to k.*items. A persistent grid, no larger
// than the items need.
template <typename K>
cudaError_t launch_in_chunks(const void* fn, K& k, uint32_t K::*items, const Args& a, uint32_t items_per_block, int warps, size_t smem,
                             int sms, cudaStream_t s) {
  int per_sm = 0;
  cudaError_t e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, fn, 32 * warps, smem);
  if (e != cudaSuccess) return e;
  const uint32_t chunk = 0x7FFFFFFFu / items_per_block;
  for (uint64_t b0 = 0; b0 < a.n_blocks; b0 += chunk) {
    const uint32_t nb = (uint32_t)(a.n_blocks - b0 < chunk ? a.n_blocks - b0 : chunk);
    k.a.raw_slots = a.raw_slots + b0;
    k.a.q_slots = a.q_slots + b0;
    k.a.n_blocks = nb;
    k.*items = nb * items_per_block;
    const uint32_t ctas_needed = (k.*items + warps - 1) / warps;
    uint32_t grid = (uint32_t)sms * (per_sm > 0 ? per_sm : 1);
    if (grid > ctas_needed) grid = ctas_needed;
    void* args[] = {&k};
    e = cudaLaunchKernel(fn, dim3(grid), dim3(32 * warps), args, smem, s);
    if (e != cudaSuccess) return e;
  }
  return cudaSuccess;
}

// The head_dim-128 kernel of a kind's rate: its wider (at integer rates its only) sub-vector's
// code is the template's, by variant from the mse or the prod family.
const void* fast_kernel(uint32_t dtype, bool quant, const tq_kind& k) {
  const uint32_t mse = k.sub[k.nsub - 1].mse_bits;
  return k.qjl ? fast_kernel_prod(dtype, quant, k.fractional, mse) : fast_kernel_mse(dtype, quant, k.fractional, mse);
}

// The launches of one range of layers of one class: one for both kinds when they share a
// rate, else one for each; blocks in chunks whose tiles number below 2^31 (FastDiv's range).
cudaError_t launch_fast_range(bool quant, const sw_tq_params* p, const Args& a, uint32_t layer0, uint32_t layers, int sms,
                              cudaStream_t s) {
  const uint32_t outer = tq_outer_layer(p, layer0);
  const uint32_t kv_count = tq_bits_x2(p, outer, 0) == tq_bits_x2(p, outer, 1) ? 2 : 1;
  for (uint32_t kv = 0; kv < 2; kv += kv_count) {
    FastArgs fa;
    fast_args(quant, p, a, layer0, layers, kv, kv_count, fa);
    if (tq_matrix_coded(&fa.kind)) continue;  // launch_matrix's or launch_halves' (kinds sharing a rate are alike)
    const void* fn = fast_kernel(p->dtype, quant, fa.kind);
    if (!fn) return cudaErrorInvalidValue;
    const size_t smem = (size_t)fa.warp_smem * kFastWarps;
    cudaError_t e = cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (e == cudaSuccess) e = launch_in_chunks(fn, fa, &FastArgs::tiles, a, fa.tiles_per_block.d, kFastWarps, smem, sms, s);
    if (e != cudaSuccess) return e;
  }
  return cudaSuccess;
}

// The layer ranges of the classes in block order: the first outer layers, the inner ones, the
// last outer ones (each may be empty).
cudaError_t launch_fast(bool quant, const sw_tq_params* p, const Args& a, int sms, cudaStream_t s) {
  const uint32_t bounds[4] = {0, p->outer_first, p->layers - p->outer_last, p->layers};
  for (int range = 0; range < 3; ++range) {
    if (bounds[range + 1] == bounds[range]) continue;
    cudaError_t e = launch_fast_range(quant, p, a, bounds[range], bounds[range + 1] - bounds[range], sms, s);
    if (e != cudaSuccess) return e;
  }
  return cudaSuccess;
}

// Format 3's matrix kinds, over all groups of the blocks (the others' items passed over), in
// chunks of blocks whose items number below 2^31.
cudaError_t launch_matrix(bool quant, const sw_tq_params* p, const Args& a, int sms, cudaStream_t s) {
  int first_matrix = -1;
  for (uint32_t g = 0; g < a.groups && first_matrix < 0; ++g)
    if (tq_group_kind(p, &a.layout, g)->matrix) first_matrix = (int)g;
  if (first_matrix < 0) return cudaSuccess;
  MatrixArgs m;
  m.a = a;
  cudaError_t e = matrix_fragments(p->seed, !quant, &m.frags);
  if (e != cudaSuccess) return e;
  const tq_matrix::Plan& plan = tq_matrix::plan_for(p->seed);
  m.book = plan.book;
  for (int code = 0; code < 16; ++code) m.centroid[code] = plan.centroid[code];
  const uint32_t tiles = p->tokens % (2 * tq_matrix::kTileVectors) == 0 ? 2 : 1;  // tokens are whole tiles (tq_make_kind)
  m.runs_per_group.set(p->tokens / (tiles * tq_matrix::kTileVectors));
  m.items_per_block.set(a.groups * m.runs_per_group.d);
  m.kv_heads.set(p->kv_heads);
  m.header_item = (uint32_t)first_matrix * m.runs_per_group.d;
  return launch_in_chunks(matrix_kernel(p->dtype, quant, tiles), m, &MatrixArgs::items, a, m.items_per_block.d, kMatrixWarps, 0, sms, s);
}

// Format 4's halves kinds, one launch for each rate among them, over all groups of the blocks
// (the other groups passed over), in chunks of blocks whose items number below 2^31.
cudaError_t launch_halves(bool quant, const sw_tq_params* p, const Args& a, int sms, cudaStream_t s) {
  for (uint32_t bits = 2; bits <= 3; ++bits) {
    int first = -1;
    for (uint32_t g = 0; g < a.groups && first < 0; ++g) {
      const tq_kind* k = tq_group_kind(p, &a.layout, g);
      if (k->halves && k->sub[1].mse_bits == bits) first = (int)g;
    }
    if (first < 0) continue;
    HalvesArgs h;
    h.a = a;
    cudaError_t e = halves_fragments(p->seed, !quant, &h.hi, &h.lo);
    if (e != cudaSuccess) return e;
    const halves::Plan& plan = halves::plan_for(p->seed, bits);
    h.books[0] = plan.outlier, h.books[1] = plan.rest;
    for (int half = 0; half < 2; ++half) {
      halves::centroid_table(plan.centroids[half], h.tables[half]);
      h.shifts[half] = plan.centroids[half].shift;
    }
    h.items_per_block.set(a.groups);
    h.kv_heads.set(p->kv_heads);
    h.header_item = (uint32_t)first;
    e = launch_in_chunks(halves_kernel(quant, bits), h, &HalvesArgs::items, a, h.items_per_block.d, kHalvesWarps, 0, sms, s);
    if (e != cudaSuccess) return e;
  }
  return cudaSuccess;
}

int fail(char* err, size_t len, int code, const char* msg, const char* detail) {
  if (err && len) snprintf(err, len, "%s%s%s", msg, detail ? ": " : "", detail ? detail : "");
  return code;
}

int launch(bool quant, const sw_tq_params* p, const void* raw_base, size_t raw_stride, const uint32_t* raw_slots,
           void* q_base, size_t q_stride, const uint32_t* q_slots, uint32_t n_blocks, void* stream, char* err,
           size_t len) {
  int rc = sw_tq_check_params(p, err, len);
  if (rc != SW_TQ_OK) return rc;
  if ((reinterpret_cast<uintptr_t>(raw_base) | raw_stride | reinterpret_cast<uintptr_t>(q_base) | q_stride) & 15u)
    return fail(err, len, SW_TQ_EPARAMS, "CUDA quantizer: base pointers and strides must be multiples of 16 bytes", nullptr);
  if (n_blocks == 0) return SW_TQ_OK;
  Args a;
  a.p = *p;
  tq_make_layout(p, &a.layout);
  sw_tq_write_header(p, a.header);
  a.kv_heads = p->kv_heads;
  a.head_dim = p->head_dim;
  a.tokens = p->tokens;
  a.groups = sw_tq_groups(p);
  a.dtype = p->dtype;
  a.dsize = p->dtype == SW_DTYPE_FP32 ? 4 : 2;
  a.row_bytes = staged(p->head_dim * a.dsize);
  a.chunk = kStageBytes / a.row_bytes;
  if (a.chunk < 1) a.chunk = 1;
  if (a.chunk > p->tokens) a.chunk = p->tokens;
  a.group_raw_bytes = (uint64_t)p->tokens * p->head_dim * a.dsize;
  a.raw_base = static_cast<const uint8_t*>(raw_base);
  a.raw_stride = raw_stride;
  a.raw_slots = raw_slots;
  a.q_base = static_cast<uint8_t*>(q_base);
  a.q_stride = q_stride;
  a.q_slots = q_slots;
  a.n_blocks = n_blocks;
  int device = 0, sms = 0, per_sm = 0;
  cudaError_t e = cudaGetDevice(&device);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  if (e != cudaSuccess) return fail(err, len, SW_TQ_ECUDA, "CUDA quantizer: device query failed", cudaGetErrorString(e));
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  if (fast_eligible(p)) {
    e = launch_fast(quant, p, a, sms, s);
  } else {
    const size_t smem = (quant ? 2u : 1u) * a.chunk * a.row_bytes;
    const void* fn = general_kernel(quant);
    e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, fn, kThreads, smem);
    if (e != cudaSuccess) return fail(err, len, SW_TQ_ECUDA, "CUDA quantizer: device query failed", cudaGetErrorString(e));
    const uint64_t work = (uint64_t)n_blocks * a.groups;
    uint64_t grid = (uint64_t)sms * (per_sm > 0 ? per_sm : 1);
    if (grid > work) grid = work;
    void* args[] = {&a};
    e = cudaLaunchKernel(fn, dim3((unsigned)grid), dim3(kThreads), args, smem, s);
  }
  if (e == cudaSuccess) e = launch_matrix(quant, p, a, sms, s);
  if (e == cudaSuccess) e = launch_halves(quant, p, a, sms, s);
  if (e != cudaSuccess)
    return fail(err, len, SW_TQ_ECUDA, quant ? "CUDA quantize launch failed" : "CUDA dequantize launch failed",
                cudaGetErrorString(e));
  return SW_TQ_OK;
}

}  // namespace

cudaError_t words_on_device(uint64_t seed, std::vector<uint32_t> (*make)(uint64_t), const uint4** words) {
  static std::mutex mutex;
  static std::map<std::tuple<void*, int, uint64_t>, uint4*> on_device;  // (make, device, seed)
  int device = 0;
  cudaError_t e = cudaGetDevice(&device);
  if (e != cudaSuccess) return e;
  std::lock_guard<std::mutex> lock(mutex);
  const auto key = std::make_tuple(reinterpret_cast<void*>(make), device, seed);
  auto found = on_device.find(key);
  if (found == on_device.end()) {
    const std::vector<uint32_t> host = make(seed);
    uint4* copy = nullptr;
    e = cudaMalloc(&copy, host.size() * 4);
    if (e == cudaSuccess) e = cudaMemcpy(copy, host.data(), host.size() * 4, cudaMemcpyHostToDevice);
    if (e != cudaSuccess) {
      cudaFree(copy);
      return e;
    }
    found = on_device.emplace(key, copy).first;
  }
  *words = found->second;
  return cudaSuccess;
}

}  // namespace tq_cuda

extern "C" int sw_tq_quantize_cuda(const sw_tq_params* p, const void* raw_base, size_t raw_stride,
                                   const uint32_t* raw_slots, void* q_base, size_t q_stride, const uint32_t* q_slots,
                                   uint32_t n_blocks, void* stream, char* err, size_t err_len) {
  return tq_cuda::launch(true, p, raw_base, raw_stride, raw_slots, q_base, q_stride, q_slots, n_blocks, stream, err, err_len);
}

extern "C" int sw_tq_dequantize_cuda(const sw_tq_params* p, const void* q_base, size_t q_stride,
                                     const uint32_t* q_slots, void* raw_base, size_t raw_stride,
                                     const uint32_t* raw_slots, uint32_t n_blocks, void* stream, char* err,
                                     size_t err_len) {
  return tq_cuda::launch(false, p, raw_base, raw_stride, raw_slots, const_cast<void*>(q_base), q_stride, q_slots,
                         n_blocks, stream, err, err_len);
}
