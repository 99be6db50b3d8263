#include "codegen/nvrtc.h"

#include <nvrtc.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "codegen/kernel_source.h"

namespace vibrant::codegen {
namespace {

namespace fs = std::filesystem;

absl::Status NvrtcError(nvrtcResult r, const std::string& what) {
  return absl::InternalError(absl::StrCat("NVRTC: ", what, ": ", nvrtcGetErrorString(r)));
}

// Deletes the program on every path out.
struct ProgramGuard {
  nvrtcProgram prog = nullptr;
  ~ProgramGuard() {
    if (prog != nullptr) nvrtcDestroyProgram(&prog);
  }
};

std::string CachePath(const std::string& dir, uint64_t key) {
  return (fs::path(dir) / "kernels" / absl::StrFormat("%016x.vbk", key)).string();
}

bool ReadFile(const std::string& path, std::string* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::stringstream ss;
  ss << in.rdbuf();
  *out = ss.str();
  return static_cast<bool>(in) || in.eof();
}

// Atomic: a temporary file in the same directory renamed over the target, so
// that concurrent compiles never see half a file.
void WriteCacheFile(const std::string& path, const std::string& bytes) {
  std::error_code ec;
  fs::create_directories(fs::path(path).parent_path(), ec);
  if (ec) return;
  const std::string tmp = absl::StrCat(path, ".tmp.", ::getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) return;
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!out) {
      out.close();
      fs::remove(tmp, ec);
      return;
    }
  }
  fs::rename(tmp, path, ec);
  if (ec) fs::remove(tmp, ec);
}

}  // namespace

std::string NvrtcVersion() {
  int major = 0, minor = 0;
  if (nvrtcVersion(&major, &minor) != NVRTC_SUCCESS) return "unknown";
  return absl::StrCat(major, ".", minor);
}

std::string DefaultKernelCacheDir() {
  if (const char* v = std::getenv("VIBRANT_CACHE_DIR"); v != nullptr && *v != '\0') return v;
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x != nullptr && *x != '\0') {
    return (fs::path(x) / "vibrant").string();
  }
  if (const char* h = std::getenv("HOME"); h != nullptr && *h != '\0') {
    return (fs::path(h) / ".cache" / "vibrant").string();
  }
  return "";
}

absl::Status ValidateCudaArch(const std::string& arch) {
  auto bad = [&]() {
    return absl::InvalidArgumentError(
        absl::StrCat("CUDA architecture '", arch, "' is not of the form sm_NN (e.g. sm_90)"));
  };
  if (arch.size() < 5 || arch.rfind("sm_", 0) != 0) return bad();
  std::string digits = arch.substr(3);
  if (digits.back() == 'a') digits.pop_back();
  int v = 0;
  if (digits.empty() || !absl::SimpleAtoi(digits, &v) || v < 50) return bad();
  for (char c : digits) {
    if (c < '0' || c > '9') return bad();
  }
  return absl::OkStatus();
}

std::string AnnotateNvrtcLog(const std::string& log, const std::string& name,
                             const std::string& source, int context) {
  std::vector<std::string> src_lines = absl::StrSplit(source, '\n');
  std::string out;
  const std::string prefix = name + "(";
  for (absl::string_view line : absl::StrSplit(log, '\n')) {
    if (line.empty()) continue;
    absl::StrAppend(&out, line, "\n");
    if (!absl::StartsWith(line, prefix)) continue;
    const size_t close = line.find(')', prefix.size());
    int n = 0;
    if (close == absl::string_view::npos ||
        !absl::SimpleAtoi(line.substr(prefix.size(), close - prefix.size()), &n)) {
      continue;
    }
    for (int i = std::max(1, n - context);
         i <= std::min<int>(static_cast<int>(src_lines.size()), n + context); ++i) {
      absl::StrAppend(&out, absl::StrFormat("  %s%5d | %s\n", i == n ? ">" : " ", i,
                                            src_lines[i - 1]));
    }
  }
  return out;
}

absl::StatusOr<KernelBundle> CompileCuda(const std::string& source, const std::string& name,
                                         const NvrtcOptions& opts, bool* cache_hit) {
  if (cache_hit != nullptr) *cache_hit = false;
  if (opts.info_log != nullptr) opts.info_log->clear();
  if (absl::Status s = ValidateCudaArch(opts.arch); !s.ok()) return s;
  std::vector<std::string> options = {"--gpu-architecture=" + opts.arch, "--std=c++17"};
  options.insert(options.end(), opts.extra_options.begin(), opts.extra_options.end());
  const std::string version = NvrtcVersion();
  const uint64_t source_hash = HashText(source);
  uint64_t key = HashText(absl::StrCat(opts.arch, "\n", version, "\n",
                                       absl::StrJoin(options, "\n")),
                          source_hash);
  std::string cache_path;
  if (opts.use_cache) {
    const std::string dir = opts.cache_dir.empty() ? DefaultKernelCacheDir() : opts.cache_dir;
    if (!dir.empty()) cache_path = CachePath(dir, key);
  }
  if (!cache_path.empty()) {
    std::string bytes;
    if (ReadFile(cache_path, &bytes)) {
      absl::StatusOr<KernelBundle> b = ParseKernelBundle(
          absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(bytes.data()),
                                    bytes.size()),
          cache_path);
      if (b.ok() && b->source_hash == source_hash && b->arch == opts.arch &&
          b->nvrtc_version == version) {
        if (cache_hit != nullptr) *cache_hit = true;
        return b;
      }
    }
  }

  ProgramGuard guard;
  nvrtcResult r = nvrtcCreateProgram(&guard.prog, source.c_str(), name.c_str(), 0, nullptr,
                                     nullptr);
  if (r != NVRTC_SUCCESS) return NvrtcError(r, "creating the program");
  std::vector<const char*> argv;
  for (const std::string& o : options) argv.push_back(o.c_str());
  r = nvrtcCompileProgram(guard.prog, static_cast<int>(argv.size()), argv.data());
  size_t log_size = 0;
  std::string log;
  if (nvrtcGetProgramLogSize(guard.prog, &log_size) == NVRTC_SUCCESS && log_size > 1) {
    log.resize(log_size);
    nvrtcGetProgramLog(guard.prog, log.data());
    log.resize(log_size - 1);  // drop the terminator
  }
  if (r != NVRTC_SUCCESS) {
    return absl::InvalidArgumentError(absl::StrCat(
        "NVRTC could not compile ", name, " for ", opts.arch, " (NVRTC ", version, "): ",
        nvrtcGetErrorString(r), "\n", AnnotateNvrtcLog(log, name, source)));
  }
  if (opts.info_log != nullptr) *opts.info_log = log;
  KernelBundle b;
  b.source_hash = source_hash;
  b.arch = opts.arch;
  b.nvrtc_version = version;
  size_t n = 0;
  if ((r = nvrtcGetCUBINSize(guard.prog, &n)) != NVRTC_SUCCESS) {
    return NvrtcError(r, "getting the CUBIN size");
  }
  b.cubin.resize(n);
  if (n > 0 && (r = nvrtcGetCUBIN(guard.prog, b.cubin.data())) != NVRTC_SUCCESS) {
    return NvrtcError(r, "getting the CUBIN");
  }
  if ((r = nvrtcGetPTXSize(guard.prog, &n)) != NVRTC_SUCCESS) {
    return NvrtcError(r, "getting the PTX size");
  }
  b.ptx.resize(n);
  if (n > 0 && (r = nvrtcGetPTX(guard.prog, b.ptx.data())) != NVRTC_SUCCESS) {
    return NvrtcError(r, "getting the PTX");
  }
  if (!cache_path.empty()) WriteCacheFile(cache_path, SerializeKernelBundle(b));
  return b;
}

}  // namespace vibrant::codegen
