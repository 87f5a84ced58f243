#pragma once
#include <napi.h>

namespace spillway {
void InitProbe(Napi::Env env, Napi::Object exports);
}
