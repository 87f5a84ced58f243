#include "io/cufile_api.h"

#include <dlfcn.h>

#include <fstream>
#include <mutex>

namespace spillway::cufile {

const Api* Load(std::string* why) {
  static std::once_flag once;
  static Api api;
  static const Api* loaded = nullptr;
  static std::string error;
  std::call_once(once, [] {
    void* lib = dlopen("libcufile.so.0", RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
      const char* e = dlerror();
      error = std::string("libcufile.so.0 not found: ") + (e ? e : "dlopen failed");
      return;
    }
    bool ok = true;
    auto sym = [&](auto& fn, const char* name) {
      fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(lib, name));
      if (!fn && ok) {
        ok = false;
        error = std::string("libcufile.so.0 lacks ") + name;
      }
    };
    sym(api.DriverOpen, "cuFileDriverOpen");
    sym(api.DriverClose, "cuFileDriverClose");
    sym(api.HandleRegister, "cuFileHandleRegister");
    sym(api.HandleDeregister, "cuFileHandleDeregister");
    sym(api.BufRegister, "cuFileBufRegister");
    sym(api.BufDeregister, "cuFileBufDeregister");
    sym(api.Read, "cuFileRead");
    sym(api.Write, "cuFileWrite");
    if (ok) loaded = &api;
  });
  if (!loaded && why) *why = error;
  return loaded;
}

const Api* Open(std::string* why) {
  static std::once_flag once;
  static const Api* opened = nullptr;
  static std::string error;
  std::call_once(once, [] {
    const Api* api = Load(&error);
    if (!api) return;
    Error e = api->DriverOpen();
    if (e.err != kSuccess) {
      error = "cuFileDriverOpen failed: cuFile error " + std::to_string(e.err) + ", CUDA error " + std::to_string(e.cu_err);
      return;
    }
    opened = api;
  });
  if (!opened && why) *why = error;
  return opened;
}

Handle RegisterFile(const Api* api, int fd, std::string* why) {
  Descr descr{};
  descr.type = kHandleOpaqueFd;
  descr.handle.fd = fd;
  Handle handle = nullptr;
  Error e = api->HandleRegister(&handle, &descr);
  if (e.err == kSuccess) return handle;
  if (why)
    *why = "cuFileHandleRegister failed with cuFile error " + std::to_string(e.err) +
           (e.err == 5027 ? " (cannot read the disk's attributes: in a container, mount /run/udev)" : "");
  return nullptr;
}

std::string ModeDescription() {
  std::string nvfs = NvfsVersion();
  return nvfs.empty() ? "cuFile in compatibility mode: nvidia-fs is not loaded, so cuFile moves data through its own bounce buffers"
                      : "cuFile with GPUDirect Storage (nvidia-fs " + nvfs + ")";
}

std::string NvfsVersion() {
  std::ifstream f("/proc/driver/nvidia-fs/version");
  std::string line;
  if (f) std::getline(f, line);
  return line;
}

}  // namespace spillway::cufile
