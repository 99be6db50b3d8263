// The plan cache: `vibrant-run -m model.gguf` compiles a GGUF once per set of
// compile options and reuses the plan afterwards.
//
// A cached plan is an ordinary plan.bin that references its GGUF (never a
// copy of the weights), stored as DIR/<gguf stem>-<device>-<16 hex digits>.plan.
// The hex digits hash everything that makes a different plan: the GGUF's
// absolute path, size and fingerprint (header, metadata, tensor table: see
// runtime/plan.h), the device and GPU architecture, the context length, the
// step size and KV type, the plan format version and this build's version and
// git description. A changed GGUF or a new Vibrant build therefore gets a new
// entry; a cached plan that fails to load is compiled again and replaced.
// Entries are never evicted: delete DIR to reclaim the space (plans are small:
// the graph and, for CUDA, the kernels).
//
// DIR is --plan-cache DIR, else $VIBRANT_PLAN_CACHE, else
// $XDG_CACHE_HOME/vibrant/plans, else $HOME/.cache/vibrant/plans.
#ifndef VIBRANT_API_PLAN_CACHE_H_
#define VIBRANT_API_PLAN_CACHE_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace vibrant {

struct PlanCacheKey {
  std::string gguf_path;  // absolute
  uint64_t gguf_size = 0;
  uint64_t gguf_fingerprint = 0;
  std::string device;  // cpu | cuda
  std::string arch;    // cuda: sm_NN
  int64_t n_ctx = 0;
  int64_t max_tokens = 0;
  std::string kv_type;  // "<K type>/<V type>": f16/f16, q8_0/f16, ...
  int64_t n_seq = 0;       // > 0: a paged graph for continuous batching
  int64_t block_size = 0;  // its KV block size
  int64_t tp = 1;          // tensor-parallel ranks (shard-tensor-parallel)
  int64_t gpu_layers = -1;  // cuda: a split with the CPU (-ngl N <= n_layer), -1: none
};

// The 64-bit hash of the key and of this build (version, git description,
// plan format version).
uint64_t PlanCacheHash(const PlanCacheKey& key);
// "<stem>-<device>-<hash as 16 hex digits>.plan".
std::string PlanCacheFileName(const PlanCacheKey& key);
// The default directory (see above); an error when no variable names one.
absl::StatusOr<std::string> DefaultPlanCacheDir();

}  // namespace vibrant

#endif  // VIBRANT_API_PLAN_CACHE_H_
