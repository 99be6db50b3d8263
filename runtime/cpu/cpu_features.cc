#include "runtime/cpu/cpu_features.h"

#include <sched.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#if defined(__x86_64__)
#include <cpuid.h>
#endif
#include <fstream>
#include <set>
#include <string>
#include <thread>
#include <utility>

namespace vibrant::cpu {
namespace {

std::atomic<int> isa_cap{-1};  // -1: not yet read from the environment

bool Has(const char* feature) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  // libgcc's cpu model checks both cpuid and the OS-enabled register state
  // (XCR0), so "avx2"/"avx512f" mean usable, not just present.
  __builtin_cpu_init();
  if (std::strcmp(feature, "avx2") == 0) return __builtin_cpu_supports("avx2");
  if (std::strcmp(feature, "fma") == 0) return __builtin_cpu_supports("fma");
  if (std::strcmp(feature, "f16c") == 0) {
    // Debian 12's clang 14 rejects __builtin_cpu_supports("f16c"): cpuid leaf
    // 1, ECX bit 29, with the OS's AVX state (which "avx" checks).
    unsigned a = 0, b = 0, c = 0, d = 0;
    return __get_cpuid(1, &a, &b, &c, &d) != 0 && (c & bit_F16C) != 0 && __builtin_cpu_supports("avx");
  }
  if (std::strcmp(feature, "avx512f") == 0) return __builtin_cpu_supports("avx512f");
  if (std::strcmp(feature, "avx512bw") == 0) return __builtin_cpu_supports("avx512bw");
  if (std::strcmp(feature, "avx512vl") == 0) return __builtin_cpu_supports("avx512vl");
  if (std::strcmp(feature, "avx512vnni") == 0) return __builtin_cpu_supports("avx512vnni");
#else
  (void)feature;
#endif
  return false;
}

Isa Detect() {
  if (!(Has("avx2") && Has("fma") && Has("f16c"))) return Isa::kPortable;
  if (Has("avx512f") && Has("avx512bw") && Has("avx512vl") && Has("avx512vnni")) {
    return Isa::kAvx512;
  }
  return Isa::kAvx2;
}

int CapFromEnv() {
  const char* v = std::getenv("VIBRANT_CPU_ISA");
  if (v == nullptr) return static_cast<int>(Isa::kAvx512);
  const std::string s(v);
  if (s == "portable" || s == "scalar") return static_cast<int>(Isa::kPortable);
  if (s == "avx2") return static_cast<int>(Isa::kAvx2);
  if (s != "avx512" && !s.empty()) {
    std::fprintf(stderr, "vibrant: VIBRANT_CPU_ISA=%s is not portable, avx2 or avx512; ignored\n",
                 s.c_str());
  }
  return static_cast<int>(Isa::kAvx512);
}

}  // namespace

const char* IsaName(Isa isa) {
  switch (isa) {
    case Isa::kPortable: return "portable";
    case Isa::kAvx2: return "avx2";
    case Isa::kAvx512: return "avx512";
  }
  return "?";
}

Isa DetectedIsa() {
  static const Isa isa = Detect();
  return isa;
}

Isa ActiveIsa() {
  int cap = isa_cap.load(std::memory_order_relaxed);
  if (cap < 0) {
    cap = CapFromEnv();
    isa_cap.store(cap, std::memory_order_relaxed);
  }
  return static_cast<Isa>(std::min(cap, static_cast<int>(DetectedIsa())));
}

Isa SetIsaForTesting(Isa isa) {
  const Isa before = ActiveIsa();
  isa_cap.store(static_cast<int>(isa), std::memory_order_relaxed);
  return before;
}

int PhysicalCoreCount() {
  cpu_set_t set;
  CPU_ZERO(&set);
  int n_cpus = 0;
  std::set<std::pair<int, int>> cores;  // (package, core)
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    for (int c = 0; c < CPU_SETSIZE; ++c) {
      if (!CPU_ISSET(c, &set)) continue;
      ++n_cpus;
      const std::string base = "/sys/devices/system/cpu/cpu" + std::to_string(c) + "/topology/";
      std::ifstream core(base + "core_id"), pkg(base + "physical_package_id");
      int core_id = -1, pkg_id = -1;
      if (!(core >> core_id) || !(pkg >> pkg_id)) {
        cores.insert({-1, c});  // topology unknown: count the CPU
      } else {
        cores.insert({pkg_id, core_id});
      }
    }
  }
  if (n_cpus == 0) return std::max(1u, std::thread::hardware_concurrency());
  return std::max<int>(1, static_cast<int>(cores.size()));
}

std::string CpuFeatureString() {
  std::string out;
  for (const char* f : {"avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512vnni"}) {
    if (Has(f)) {
      if (!out.empty()) out += ' ';
      out += f;
    }
  }
  return out.empty() ? "baseline" : out;
}

}  // namespace vibrant::cpu
