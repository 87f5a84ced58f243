#pragma once
#include <napi.h>

namespace spillway {
void InitHostMemory(Napi::Env env, Napi::Object exports);
}
