// The addon's errors. Every code the addon raises is named once in SW_ERROR_CODES; each is
// a code of runtime/errors.ts's table, which keeps the HTTP statuses (errorCodes() lists
// them for the test that checks this). The runtime hands over its error class once at load
// (setErrorClass), and NewError constructs it, so a native error reaches TypeScript as the
// runtime's own type, as better-sqlite3 does with its SqliteError.
#pragma once
#include <napi.h>

#include <stdexcept>
#include <string>

namespace spillway {

#define SW_ERROR_CODES(X)                    \
  X(kBusy, "BUSY")                           \
  X(kChecksumMismatch, "CHECKSUM_MISMATCH")  \
  X(kClosed, "CLOSED")                       \
  X(kDiskFull, "DISK_FULL")                  \
  X(kInternal, "INTERNAL")                   \
  X(kInvalidArgument, "INVALID_ARGUMENT")    \
  X(kIoError, "IO_ERROR")                    \
  X(kOutOfMemory, "OUT_OF_MEMORY")           \
  X(kQuantFormat, "QUANT_FORMAT")            \
  X(kQuantMismatch, "QUANT_MISMATCH")        \
  X(kQuantParams, "QUANT_PARAMS")            \
  X(kSlotMismatch, "SLOT_MISMATCH")

enum class ErrorCode {
#define SW_ERROR_CODE_ENUM(name, code) name,
  SW_ERROR_CODES(SW_ERROR_CODE_ENUM)
#undef SW_ERROR_CODE_ENUM
};

const char* ErrorCodeName(ErrorCode code);

// Thrown from worker code, and carried into JS by AsyncTask.
struct CodedError : std::runtime_error {
  CodedError(ErrorCode c, const std::string& message) : std::runtime_error(message), code(c) {}
  ErrorCode code;
};

// An instance of the runtime's error class, new ErrorClass(code, message); a plain Error
// carrying `code` where no class has been handed over (the addon loaded on its own).
Napi::Error NewError(Napi::Env env, ErrorCode code, const std::string& message);
inline Napi::Error NewError(Napi::Env env, const CodedError& e) { return NewError(env, e.code, e.what()); }

// setErrorClass(cls) and errorCodes().
void InitErrors(Napi::Env env, Napi::Object exports);

}  // namespace spillway
