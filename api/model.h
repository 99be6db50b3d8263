// A model ready to run: a plan (read from plan.bin, from the plan cache, or
// compiled now from a GGUF), its GGUF, its tokenizer and chat template. The
// C++ core under the public API (include/vibrant/vibrant.h) and vibrant-run.
//
// Loading `path`:
//   * a GGUF: compiled for the chosen device on first use into the plan cache
//     (api/plan_cache.h), reused afterwards; without the cache, compiled in
//     memory at every load;
//   * a plan (plan.bin): used as it is, unless the options ask for another
//     device, context or step size than it was compiled with; then its GGUF
//     (referenced or embedded) is compiled again with those options, as for a
//     GGUF, and a note says so.
// Devices: "cpu", "cuda", or "auto": a plan's own device; for a GGUF the GPU
// when this build has the CUDA backend, a GPU is present and the model's
// weights, KV cache and activations fit in its free memory, else the CPU. A
// cuda plan on a machine without a usable GPU falls back to the CPU under
// "auto". Every such decision is reported through ModelOptions::log.
#ifndef VIBRANT_API_MODEL_H_
#define VIBRANT_API_MODEL_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "frontends/gguf/gguf.h"
#include "frontends/tokenizer/tokenizer.h"
#include "ir/dtype.h"
#include "ir/graph.h"
#include "runtime/backend.h"
#include "runtime/plan.h"
#include "runtime/program.h"

namespace vibrant {

struct ModelOptions {
  std::string device = "auto";  // auto | cpu | cuda
  int64_t n_ctx = 0;            // 0: the plan's; for a GGUF min(its training context, 4096)
  int64_t max_tokens = 0;       // tokens per step (prefill chunk); 0: the plan's, else 512
  // Continuous batching (vibrant-server): n_seq > 0 compiles a paged graph
  // for up to n_seq sequences per step with KV blocks of block_size tokens
  // (frontends/lower/lower.h, LowerOptions::n_seq); n_ctx is then the KV
  // budget of all sequences together. A plan is used as it is only when it
  // was compiled with the same n_seq and block_size.
  int64_t n_seq = 0;
  int64_t block_size = 16;
  // Tensor parallelism (passes/shard_tensor_parallel.h): 0 = the plan's (1
  // for a GGUF); N > 1 compiles a plan sharded for N ranks: one GPU per rank
  // over NCCL (device auto picks cuda only with N GPUs), or on the CPU N
  // simulated ranks.
  int64_t tp = 0;
  // llama.cpp's -ngl for a GGUF compiled for cuda: -1 = no split (the whole
  // model on the GPU); N in 1..n_layer = only the last N layers on the GPU,
  // the rest of the model on the CPU, in one plan (compiler/compiler.h:
  // CompileOptions::gpu_layers); more than n_layer = no split. A plan is
  // used as it is only when it was split the same way. (0 is --device cpu:
  // vibrant-run maps it.)
  int64_t gpu_layers = -1;
  bool use_plan_cache = true;
  std::string plan_cache_dir;   // "": DefaultPlanCacheDir()
  // Receives one line per decision (device choice, cache hit or compile).
  std::function<void(std::string_view)> log;
};

// The KV cache element types (the plan's cache_type_k / cache_type_v).
struct KvTypes {
  DType k = DType::kF16;
  DType v = DType::kF16;
};

class Model {
 public:
  static absl::StatusOr<std::unique_ptr<Model>> Load(const std::string& path,
                                                     const ModelOptions& opts);
  ~Model();

  const std::string& path() const { return path_; }
  // "cpu" or "cuda": what the executors run on.
  const std::string& device() const { return device_; }
  const ir::Graph& graph() const { return program_.graph; }
  const Program& program() const { return program_; }
  const GgufFile& gguf() const { return *gguf_; }
  const Tokenizer& tokenizer() const { return *tokenizer_; }
  int64_t n_ctx() const { return n_ctx_; }
  int64_t n_vocab() const { return n_vocab_; }
  int64_t max_tokens() const { return program_.graph.max_tokens; }
  // Paged graphs (ModelOptions::n_seq > 0): sequences per step, the KV block
  // size and blocks per sequence (0 when not paged).
  int64_t n_seq() const { return n_seq_; }
  int64_t block_size() const { return block_size_; }
  int64_t max_blocks() const { return max_blocks_; }
  // The plan file in use ("" when compiled in memory), whether it came from
  // the plan cache, and whether it was compiled during this load.
  const std::string& plan_path() const { return plan_path_; }
  bool from_plan_cache() const { return from_cache_; }
  bool compiled_now() const { return compiled_now_; }
  double load_seconds() const { return load_seconds_; }
  // tokenizer.chat_template, or "" when the GGUF has none.
  std::string chat_template_text() const;

  // A new executor (its own KV cache) over this model's weights. threads: CPU
  // threads (0: all cores). On CUDA each executor holds its own copy of the
  // weights in VRAM.
  absl::StatusOr<std::unique_ptr<Executor>> CreateExecutor(int threads) const;

 private:
  Model() = default;
  absl::Status Init(const std::string& path, const ModelOptions& opts);
  absl::Status LoadPlanFile(const std::string& plan_path, const ModelOptions& opts, bool* redo);
  absl::Status CompileFromGguf(std::unique_ptr<GgufFile> gguf, const ModelOptions& opts,
                               KvTypes kv_type, bool gguf_is_embedded);
  absl::Status UsePlan(std::unique_ptr<PlanFile> plan);
  absl::Status Finish();

  std::string path_;
  std::string device_;
  std::unique_ptr<PlanFile> plan_;   // when running a plan file
  std::unique_ptr<PlanFile> outer_plan_;  // a plan whose embedded GGUF was recompiled
  std::unique_ptr<GgufFile> gguf_;
  std::unique_ptr<Tokenizer> tokenizer_;
  Program program_;  // what the executors run: graph, and for cuda dispatch table and kernels
  int64_t n_ctx_ = 0, n_vocab_ = 0;
  int64_t n_seq_ = 0, block_size_ = 0, max_blocks_ = 0;
  std::string plan_path_;
  bool from_cache_ = false, compiled_now_ = false;
  double load_seconds_ = 0;
  std::function<void(std::string_view)> log_;
};

// "GGUF", "plan", or an error naming the path: absent, unreadable, a
// directory, or neither format.
absl::StatusOr<std::string> SniffModelFile(const std::string& path);

}  // namespace vibrant

#endif  // VIBRANT_API_MODEL_H_
