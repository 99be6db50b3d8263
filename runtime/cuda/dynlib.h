// Optional libraries loaded at run time (dlopen), never linked, so that
// binaries start where they are absent: cuBLASLt (cublaslt.h) and NCCL
// (nccl.h). What they share: open the first of several names that loads,
// saying why each one did not, and resolve entry points by name, collecting
// those that are missing.
#ifndef VIBRANT_RUNTIME_CUDA_DYNLIB_H_
#define VIBRANT_RUNTIME_CUDA_DYNLIB_H_

#include <dlfcn.h>

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace vibrant {

struct DlOpened {
  void* dl = nullptr;  // null: none of the names loaded
  std::string path;    // the name that loaded
  std::string tried;   // "name: dlerror; ..." of those that did not ("no file" for none)
};

inline DlOpened DlOpenFirst(const std::vector<std::string>& names) {
  DlOpened out;
  std::vector<std::string> tried;
  for (const std::string& n : names) {
    out.dl = dlopen(n.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (out.dl != nullptr) {
      out.path = n;
      break;
    }
    const char* why = dlerror();
    tried.push_back(absl::StrCat(n, ": ", why != nullptr ? why : "not found"));
  }
  out.tried = tried.empty() ? std::string("no file") : absl::StrJoin(tried, "; ");
  return out;
}

// sym(&lib->fn, "name") sets a function pointer from the library (null and
// remembered in missing() when it lacks the symbol).
class DlSymbols {
 public:
  explicit DlSymbols(void* dl) : dl_(dl) {}
  template <typename FnPtr>
  void operator()(FnPtr* fn, const char* name) {
    void* p = dlsym(dl_, name);
    if (p == nullptr) missing_.push_back(name);
    *fn = reinterpret_cast<FnPtr>(p);
  }
  bool ok() const { return missing_.empty(); }
  std::string missing() const { return absl::StrJoin(missing_, ", "); }

 private:
  void* dl_;
  std::vector<std::string> missing_;
};

}  // namespace vibrant

#endif  // VIBRANT_RUNTIME_CUDA_DYNLIB_H_
