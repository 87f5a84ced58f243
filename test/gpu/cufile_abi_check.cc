// Checks addon/src/io/cufile_api.h's declarations against NVIDIA's cufile.h, where it exists
// (compiled on a machine with CUDA's cuFile headers: g++ -std=c++17 -fsyntax-only
// -I$CUDA/include -Iaddon/src test/gpu/cufile_abi_check.cc). Nothing runs: it compiles or not.
#include <cufile.h>

#include <cstddef>
#include <type_traits>

#include "io/cufile_api.h"

namespace cf = spillway::cufile;

static_assert(sizeof(cf::Error) == sizeof(CUfileError_t), "CUfileError_t size");
static_assert(offsetof(cf::Error, err) == offsetof(CUfileError_t, err), "CUfileError_t.err");
static_assert(offsetof(cf::Error, cu_err) == offsetof(CUfileError_t, cu_err), "CUfileError_t.cu_err");
static_assert(cf::kSuccess == CU_FILE_SUCCESS, "CU_FILE_SUCCESS");
static_assert(sizeof(cf::Descr) == sizeof(CUfileDescr_t), "CUfileDescr_t size");
static_assert(offsetof(cf::Descr, type) == offsetof(CUfileDescr_t, type), "CUfileDescr_t.type");
static_assert(offsetof(cf::Descr, handle) == offsetof(CUfileDescr_t, handle), "CUfileDescr_t.handle");
static_assert(offsetof(cf::Descr, fs_ops) == offsetof(CUfileDescr_t, fs_ops), "CUfileDescr_t.fs_ops");
static_assert(static_cast<int>(cf::kHandleOpaqueFd) == static_cast<int>(CU_FILE_HANDLE_TYPE_OPAQUE_FD), "CU_FILE_HANDLE_TYPE_OPAQUE_FD");
static_assert(sizeof(cf::Handle) == sizeof(CUfileHandle_t), "CUfileHandle_t");

// Same parameter and return types, up to the C enums we declare as int.
static_assert(std::is_same_v<decltype(&cuFileRead), ssize_t (*)(CUfileHandle_t, void*, size_t, off_t, off_t)>, "cuFileRead");
static_assert(std::is_same_v<decltype(&cuFileWrite), ssize_t (*)(CUfileHandle_t, const void*, size_t, off_t, off_t)>, "cuFileWrite");
static_assert(std::is_same_v<decltype(&cuFileHandleDeregister), void (*)(CUfileHandle_t)>, "cuFileHandleDeregister");
static_assert(std::is_same_v<decltype(&cuFileBufRegister), CUfileError_t (*)(const void*, size_t, int)>, "cuFileBufRegister");
static_assert(std::is_same_v<decltype(&cuFileBufDeregister), CUfileError_t (*)(const void*)>, "cuFileBufDeregister");
static_assert(std::is_same_v<decltype(&cuFileHandleRegister), CUfileError_t (*)(CUfileHandle_t*, CUfileDescr_t*)>, "cuFileHandleRegister");
static_assert(std::is_same_v<decltype(&cuFileDriverOpen), CUfileError_t (*)(void)>, "cuFileDriverOpen");
