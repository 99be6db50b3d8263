#include "api/version.h"

#include "absl/strings/str_cat.h"
#include "vibrant_git_describe.h"  // generated: VIBRANT_GIT_DESCRIBE

namespace vibrant {

std::string_view VersionNumber() { return VIBRANT_VERSION_NUMBER; }
std::string_view GitDescribe() { return VIBRANT_GIT_DESCRIBE; }

bool HasCudaBackend() {
#ifdef VIBRANT_CUDA_TOOLKIT_VERSION
  return true;
#else
  return false;
#endif
}

std::string_view CudaToolkitVersion() {
#ifdef VIBRANT_CUDA_TOOLKIT_VERSION
  return VIBRANT_CUDA_TOOLKIT_VERSION;
#else
  return "";
#endif
}

std::string VersionLine(std::string_view tool) {
  const std::string cuda = HasCudaBackend()
                               ? absl::StrCat("CUDA backend: toolkit ", std::string(CudaToolkitVersion()))
                               : std::string("no CUDA backend");
  return absl::StrCat(std::string(tool), " ", std::string(VersionNumber()), " (git ",
                      std::string(GitDescribe()), ", ", cuda, ")");
}

}  // namespace vibrant
