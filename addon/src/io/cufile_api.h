// The few cuFile (GPUDirect Storage) types and functions spillway uses, declared here from
// NVIDIA's cuFile API reference so that the addon builds without cufile.h and loads
// without libcufile: the library is opened with dlopen at run time. test/gpu checks these
// declarations against the real header (sizeof/offsetof) where it exists.
#pragma once
#include <sys/types.h>

#include <cstddef>
#include <string>

namespace spillway::cufile {

// CUfileError_t: { CUfileOpError err; CUresult cu_err; } (both C enums).
struct Error {
  int err;
  int cu_err;
};
constexpr int kSuccess = 0;

enum HandleType { kHandleOpaqueFd = 1 };

// CUfileDescr_t
struct Descr {
  int type;
  union {
    int fd;
    void* handle;
  } handle;
  const void* fs_ops;
};

using Handle = void*;

struct Api {
  Error (*DriverOpen)();
  Error (*DriverClose)();
  Error (*HandleRegister)(Handle*, Descr*);
  void (*HandleDeregister)(Handle);
  Error (*BufRegister)(const void*, size_t, int);
  Error (*BufDeregister)(const void*);
  ssize_t (*Read)(Handle, void*, size_t, off_t, off_t);
  ssize_t (*Write)(Handle, const void*, size_t, off_t, off_t);
};

// Loads libcufile.so.0 once. Returns nullptr and sets `why` when it is missing or lacks a
// symbol; never throws.
const Api* Load(std::string* why);

// Loads the library and opens the driver, once per process. nullptr and `why` on failure.
const Api* Open(std::string* why);

// Registers an open file with cuFile. nullptr (and `why`) when it cannot: in a container
// without /run/udev, registration fails with error 5027, which `why` explains.
Handle RegisterFile(const Api* api, int fd, std::string* why);

// How cuFile moves data on this machine, for status: GPUDirect Storage or compatibility mode.
std::string ModeDescription();

// The nvidia-fs kernel module's version, or "" when it is not loaded (then cuFile can only
// run in compatibility mode: its own POSIX path through bounce buffers).
std::string NvfsVersion();

}  // namespace spillway::cufile
