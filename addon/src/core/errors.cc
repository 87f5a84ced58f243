#include "core/errors.h"

#include <iterator>
#include <utility>

namespace spillway {
namespace {

constexpr const char* kErrorCodeNames[] = {
#define SW_ERROR_CODE_NAME(name, code) code,
    SW_ERROR_CODES(SW_ERROR_CODE_NAME)
#undef SW_ERROR_CODE_NAME
};

// setErrorClass(cls): the class NewError constructs, kept for this environment (each worker
// thread that loads the addon hands over its own).
Napi::Value SetErrorClass(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsFunction()) throw Napi::TypeError::New(env, "cls must be a class");
  Napi::FunctionReference error_class = Napi::Persistent(info[0].As<Napi::Function>());
  if (auto* held = env.GetInstanceData<Napi::FunctionReference>()) *held = std::move(error_class);
  else env.SetInstanceData(new Napi::FunctionReference(std::move(error_class)));
  return env.Undefined();
}

// errorCodes(): every code NewError can give an error.
Napi::Value ErrorCodes(const Napi::CallbackInfo& info) {
  Napi::Array codes = Napi::Array::New(info.Env(), std::size(kErrorCodeNames));
  for (uint32_t i = 0; i < std::size(kErrorCodeNames); i++) codes.Set(i, kErrorCodeNames[i]);
  return codes;
}

}  // namespace

const char* ErrorCodeName(ErrorCode code) { return kErrorCodeNames[static_cast<size_t>(code)]; }

Napi::Error NewError(Napi::Env env, ErrorCode code, const std::string& message) {
  Napi::String code_value = Napi::String::New(env, ErrorCodeName(code));
  auto* error_class = env.GetInstanceData<Napi::FunctionReference>();
  if (!error_class) {
    Napi::Error err = Napi::Error::New(env, message);
    err.Set("code", code_value);
    return err;
  }
  return Napi::Error(env, error_class->New({code_value, Napi::String::New(env, message)}));
}

void InitErrors(Napi::Env env, Napi::Object exports) {
  exports.Set("setErrorClass", Napi::Function::New(env, SetErrorClass, "setErrorClass"));
  exports.Set("errorCodes", Napi::Function::New(env, ErrorCodes, "errorCodes"));
}

}  // namespace spillway
