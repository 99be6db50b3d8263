// What every backend checks in a graph before it allocates or runs anything.
//
// A plan is a file people download and share: its checksums detect
// corruption, they do not make it trustworthy. Every backend (the CPU
// executor, the CUDA executor, the plan loader) calls ValidateExecutableGraph
// on the graph it is given and CheckMemoryLimit on what it is about to
// allocate, so that a crafted plan is an error, never an out-of-bounds access
// or an allocation the user did not agree to.
//
//   absl::StatusOr<GraphMemoryNeeds> needs = ValidateExecutableGraph(graph);
//   absl::StatusOr<MemoryLimit> limit = HostMemoryLimit();   // or the GPU's
//   CheckMemoryLimit(needs->total(), "the plan's arenas and KV caches", *limit);
//
// For a CUDA executor: the device arenas and KV caches are
// needs->devices[ir::Device::kCuda]; check them against the GPU's free memory
// (MemoryLimit{free_bytes, "the GPU's free memory"}), or against the user's
// VIBRANT_MAX_MEMORY when set (MemoryLimitFromEnv).
#ifndef VIBRANT_RUNTIME_PLAN_VALIDATE_H_
#define VIBRANT_RUNTIME_PLAN_VALIDATE_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "ir/graph.h"

namespace vibrant {

// The environment variable that raises (or lowers) the memory limit:
// VIBRANT_MAX_MEMORY=SIZE, SIZE a number of bytes with an optional K, M, G or
// T suffix (powers of 1024), e.g. 64G; "none" removes the limit.
inline constexpr char kMaxMemoryEnv[] = "VIBRANT_MAX_MEMORY";

// The memory a backend will allocate for a graph, as validated.
struct GraphMemoryNeeds {
  struct Device {
    int64_t arena_bytes = 0;  // the step arena (planned; else one slot per value)
    int64_t kv_bytes = 0;     // the KV caches
    // The arena if nothing shared bytes: an upper bound of any valid plan.
    int64_t unshared_arena_bytes = 0;
  };
  std::map<ir::Device, Device> devices;
  bool planned = false;  // the graph carries a memory plan (Graph::memory)
  int64_t arena_bytes() const;
  int64_t kv_bytes() const;
  int64_t total() const { return arena_bytes() + kv_bytes(); }
};

// Checks `g` for everything an executor trusts, from the graph alone:
// - it verifies (ir::Verify: SSA, shapes, dtypes, ids in range);
// - with a memory plan: passes::CheckMemoryPlan (no two values live at the
//   same time share a byte; in particular an op's inputs never alias its
//   outputs, except an allowed in-place output, so the step inputs tokens and
//   positions cannot be overwritten while an op still reads them; every
//   arena value lies inside its device's arena; views carry their root's
//   offset; each device's kv_bytes is exactly its KV caches), and no arena is
//   larger than the graph could need (the sum of its values without any
//   sharing);
// - every view (reshape) lies inside its root;
// - every size and their sums fit in int64.
// Errors name the value, op or device ("memory plan: %tokens (cpu) [0, 16)
// and %x (cpu) [0, 32) overlap while both are live (ops 0..0)").
absl::StatusOr<GraphMemoryNeeds> ValidateExecutableGraph(const ir::Graph& g);

// A bound on the bytes a backend may allocate, and where it comes from (for
// the error message).
struct MemoryLimit {
  std::optional<int64_t> bytes;  // nullopt: no limit
  std::string source;
};

// The limit the user set in VIBRANT_MAX_MEMORY, or nullopt when unset. A
// malformed value is an error naming the variable.
absl::StatusOr<std::optional<MemoryLimit>> MemoryLimitFromEnv();
// The limit for host memory: VIBRANT_MAX_MEMORY when set, else this machine's
// physical memory.
absl::StatusOr<MemoryLimit> HostMemoryLimit();
// Parses a size ("4096", "512M", "64G", "none" = no limit).
absl::StatusOr<std::optional<int64_t>> ParseMemorySize(std::string_view text);

// Fails (ResourceExhausted) when `bytes` exceeds `limit`:
// "the plan needs 16.0 GiB (arenas and KV caches), more than the limit of
// 7.6 GiB (this machine's physical memory); set VIBRANT_MAX_MEMORY to raise it".
absl::Status CheckMemoryLimit(int64_t bytes, std::string_view what, const MemoryLimit& limit);

// "1.5 GiB", "512.0 KiB", "12 B".
std::string FormatBytes(int64_t bytes);

}  // namespace vibrant

#endif  // VIBRANT_RUNTIME_PLAN_VALIDATE_H_
