#pragma once
#include <napi.h>

#include "turboquant.h"

namespace spillway {
// Reads a JS params object ({ layers, kvHeads, headDim, tokens, dtype, keyBitsX2,
// valueBitsX2, variant, seed }) and validates it with the quantizer's own check.
sw_tq_params ParamsFromJs(Napi::Env env, const Napi::Value& v);
void InitQuantize(Napi::Env env, Napi::Object exports);
}  // namespace spillway
