// What build this is: `--version` of every tool, vb_version(), and part of
// the plan cache's key.
#ifndef VIBRANT_API_VERSION_H_
#define VIBRANT_API_VERSION_H_

#include <string>
#include <string_view>

namespace vibrant {

// "0.1.0" (the CMake project's version).
std::string_view VersionNumber();
// `git describe --always --dirty` of the source tree at build time
// ("00202be1a2b3", "00202be1a2b3-dirty"), or "unknown" outside a git checkout.
std::string_view GitDescribe();
// Whether this build has the CUDA backend, and the toolkit's version ("13.0").
bool HasCudaBackend();
std::string_view CudaToolkitVersion();
// "vibrant-run 0.1.0 (git 00202be1a2b3, CUDA backend: toolkit 13.0)".
std::string VersionLine(std::string_view tool);

}  // namespace vibrant

#endif  // VIBRANT_API_VERSION_H_
