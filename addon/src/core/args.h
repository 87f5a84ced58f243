// Argument checks shared by every binding: JavaScript validates what users send, so a
// failure here is a caller bug, thrown as a TypeError or RangeError that names the argument.
#pragma once
#include <napi.h>

#include <cstdint>
#include <string>

namespace spillway {

// Positional arguments: a TypeError names the argument.
uint32_t ArgU32(const Napi::CallbackInfo& info, size_t i, const char* name);
uint64_t ArgU64(const Napi::CallbackInfo& info, size_t i, const char* name);
Napi::Buffer<uint8_t> ArgBuffer(const Napi::CallbackInfo& info, size_t i, const char* name);
// The caller's buffer of exactly `bytes` to fill (argument i, optional), or a new one: a
// caller that reuses its buffers then allocates nothing per call.
Napi::Buffer<uint8_t> OutBuffer(const Napi::CallbackInfo& info, size_t i, size_t bytes, const char* name);
// Checks that [offset, offset + length) lies inside `buf`.
void CheckRange(Napi::Env env, const Napi::Buffer<uint8_t>& buf, uint64_t offset, uint64_t length, const char* name);

// Fields of an options object: a TypeError names `<object>.<field>`.
double FieldNumber(Napi::Env env, const Napi::Object& o, const char* object, const char* field);
std::string FieldString(Napi::Env env, const Napi::Object& o, const char* object, const char* field);

}  // namespace spillway
