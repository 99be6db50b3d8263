// The dispatch table: what a plan for a device with generated kernels (cuda)
// tells its runtime to do, launch by launch. The compiler writes it
// (codegen/lower_dispatch.h) from the IR after select-kernels, next to the
// kernels (KERNELS); the runtime executes it and decides nothing: every
// kernel, grid, argument and buffer offset is here, as a rule in the step's
// token count T where it depends on it. Serialized as plan.bin's DISPATCH
// section (format below); every field is validated on load.
//
// Memory: five regions, each one device allocation the runtime makes with
// the size the table gives: kArena (the step's values, planned by
// plan-memory), kWeights (the GGUF tensors the graph reads, each at the
// offset `weights` gives), kKv (the KV caches), kScratch (kernels' temporary
// buffers: attention partials, f16 GEMM operands; each op's starts at 0, ops
// run one after another), kState (state that lives across steps, zeroed once
// when the runtime allocates it: the persistent decode kernel's task
// counters), and kNone (a null pointer argument).
#ifndef VIBRANT_RUNTIME_DISPATCH_H_
#define VIBRANT_RUNTIME_DISPATCH_H_

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace vibrant::dispatch {

// 3: the persistent decode kernel's state region and RunsIn (2), the sample
// op's I/O (Table::sampling, Table::token). 4: the paged I/O (seq_ids,
// block_table) of continuous-batching plans. 5: tensor parallelism (Table::tp_ranks,
// sharded weight slots, the collective launches). 6: plans split between the
// GPU and the host (-ngl: LaunchKind::kHost, kToHost, kFromHost).
inline constexpr uint32_t kDispatchFormatVersion = 6;

// An integer rule in the token count T: clamp(ceil(a * T + b) / c), lo, hi)
// with integer division rounding up (c > 0).
struct TExpr {
  int64_t a = 0, b = 0, c = 1;
  int64_t lo = std::numeric_limits<int64_t>::min();
  int64_t hi = std::numeric_limits<int64_t>::max();

  static TExpr Const(int64_t v) { return TExpr{0, v, 1}; }
  // a * T + b
  static TExpr Linear(int64_t a, int64_t b) { return TExpr{a, b, 1}; }
  // ceil((a * T + b) / c), clamped to [lo, hi]
  static TExpr CeilDiv(int64_t a, int64_t b, int64_t c, int64_t lo = 1,
                       int64_t hi = std::numeric_limits<int64_t>::max()) {
    return TExpr{a, b, c, lo, hi};
  }
  int64_t Eval(int64_t T) const;
  bool operator==(const TExpr&) const = default;
};

enum class Region : uint8_t { kNone = 0, kArena = 1, kWeights = 2, kKv = 3, kScratch = 4, kState = 5 };
inline constexpr int kNumRegions = 6;
const char* RegionName(Region r);

// Bytes [offset(T), offset(T) + extent(T)) of a region: what a pointer
// argument may touch (checked against the region's size on load, for every
// T of the launch's range).
struct BufRef {
  Region region = Region::kNone;
  TExpr offset;
  TExpr extent;
  bool operator==(const BufRef&) const = default;
};

struct Arg {
  enum class Kind : uint8_t { kPtr = 0, kI32 = 1, kI64 = 2, kF32 = 3 };
  Kind kind = Kind::kI32;
  BufRef buf;     // kPtr
  TExpr value;    // kI32, kI64
  float f = 0;    // kF32
  bool operator==(const Arg&) const = default;

  static Arg Ptr(BufRef b) { Arg a; a.kind = Kind::kPtr; a.buf = b; return a; }
  static Arg I32(TExpr v) { Arg a; a.kind = Kind::kI32; a.value = v; return a; }
  static Arg I64(TExpr v) { Arg a; a.kind = Kind::kI64; a.value = v; return a; }
  static Arg F32(float f) { Arg a; a.kind = Kind::kF32; a.f = f; return a; }
};

enum class LaunchKind : uint8_t {
  kKernel = 0,  // a kernel of the plan's module
  kGemm = 1,    // a cuBLASLt GEMM: out[M, N] = a[M, K] . b[N, K]^T, f16 a and b,
                // f32 out (row-major, leading dims lda, ldb, ldo), f32 accumulation
  kCopy = 2,    // a device-to-device copy of `bytes` from src to dst
  // Collectives of a tensor-parallel plan (tp_ranks > 1; ir/ops.h), run by
  // every rank on its own copy of the table at the same point of the step:
  kAllReduce = 3,  // dst = the sum over ranks of src, `bytes` of f32, in rank
                   // order where the runtime sums itself (ranks sharing one
                   // GPU: `kernel` (vb_add) with grid/block, out = a + b)
  kAllGather = 4,  // dst[row, r * n + j] = src_r[row, j] for m rows of n f32;
                   // `a`: scratch of m * n * ranks f32 for a gather that
                   // arrives rank after rank (NCCL) and is then reordered
  // A plan split between the GPU and the host (vibrantc compile -ngl N: the
  // IR places some ops on the cpu). The runtime runs the launches in order,
  // waiting for the GPU before the host's work:
  kHost = 5,      // the host runs IR op `op` (an op placed on the cpu) with
                  // the CPU backend's kernels, on host memory of its own
  kToHost = 6,    // `bytes` from the device buffer src to the host's copy of
                  // the output of copy op `op` (dst is kNone)
  kFromHost = 7,  // `bytes` from the host's input of copy op `op` to the
                  // device buffer dst (src is kNone)
};

// Whether a launch is the host's work or a transfer to or from it (a split
// plan's), rather than the GPU's own.
inline bool IsHostSide(LaunchKind k) {
  return k == LaunchKind::kHost || k == LaunchKind::kToHost || k == LaunchKind::kFromHost;
}

// Which runs of a step include a launch. A persistent decode kernel
// (codegen/kernels/persistent.h) replaces the op-by-op launches of its steps;
// those stay in the table for runs that need one launch per op (--verify,
// profiling), marked kPerOpOnly.
enum class RunsIn : uint8_t {
  kAlways = 0,
  kScheduledOnly = 1,  // the persistent kernel: plain runs (CUDA graph replays)
  kPerOpOnly = 2,      // the launches it replaces: --verify and profiling runs
};

struct Launch {
  int32_t op = -1;  // the IR op it belongs to (errors, --verify)
  int64_t t_min = 1, t_max = 1;  // it runs in steps of T in [t_min, t_max]
  RunsIn runs_in = RunsIn::kAlways;
  LaunchKind kind = LaunchKind::kKernel;
  std::string name;  // kernel name, "cublaslt" or "memcpy" (as the IR's Op::kernels)
  // kKernel
  int32_t kernel = -1;  // index into Table::kernels
  TExpr grid[3] = {TExpr::Const(1), TExpr::Const(1), TExpr::Const(1)};
  uint32_t block[3] = {1, 1, 1};
  uint32_t smem = 0;
  std::vector<Arg> args;
  // kGemm
  BufRef a, b, out;
  TExpr m;
  int64_t n = 0, k = 0, lda = 0, ldb = 0, ldo = 0;
  // kCopy
  BufRef dst, src;
  TExpr bytes;
  bool operator==(const Launch&) const = default;
};

// A GGUF tensor uploaded into the weights region: its first `bytes` bytes,
// or in a tensor-parallel plan a rank's shard of it (ir::Value::rank_offsets):
// rank r's slot holds bytes / row_bytes rows of row_bytes, row i read from
// the tensor at rank_offsets[r] + i * row_stride (row_stride 0: row_bytes,
// one contiguous block).
struct WeightSlot {
  std::string source;  // the GGUF tensor name (ir::Value::source)
  int64_t offset = 0;
  int64_t bytes = 0;
  std::vector<int64_t> rank_offsets;  // bytes into the tensor; empty: not sharded
  int64_t row_bytes = 0, row_stride = 0;
  bool operator==(const WeightSlot&) const = default;
};

struct Table {
  std::vector<std::string> kernels;  // every kernel a launch names, each once
  int64_t region_bytes[kNumRegions] = {0, 0, 0, 0, 0, 0};  // kNone's is 0
  std::vector<WeightSlot> weights;
  // The step's I/O: the runtime writes T token ids and T positions (i32) to
  // these arena buffers before the launches and reads `logits_elems(T)` f32
  // from `logits` after them. In a plan with kHost launches any of them may
  // be kNone: the host's ops read the inputs (or make the logits) there.
  BufRef tokens, positions, logits;
  TExpr logits_elems;
  // A plan that samples (ir/ops.h: sample): the runtime writes the draw's 8
  // i32 parameters (runtime/sampler.h: PackSampleParams) to `sampling` before
  // every step's launches, and after a step that asks for the token reads
  // one i32 from `token` instead of the logits. Both kNone otherwise.
  BufRef sampling, token;
  int64_t max_tokens = 1;  // 1 <= T <= max_tokens
  // Ranks of a tensor-parallel plan (ir meta tp; 1: none): every rank runs
  // these launches on its own GPU with its shards of the weights.
  int64_t tp_ranks = 1;
  int64_t n_ctx = 0;       // positions must be < n_ctx (0: no KV cache)
  int64_t n_vocab = 0;     // token ids must be < n_vocab
  // Paged plans (continuous batching, LowerOptions::n_seq > 0): the runtime
  // also writes T sequence slots (i32, < n_seq) to `seq_ids` and the block
  // table (n_seq * max_blocks i32, block ids < n_ctx / block_size) to
  // `block_table`; n_ctx is then the KV pool's rows. kNone / 0 otherwise.
  BufRef seq_ids, block_table;
  int64_t n_seq = 0, max_blocks = 0, block_size = 0;
  // Execution: steps of T <= graph_max_tokens are captured once as a CUDA
  // graph and replayed (0: never); programmatic dependent launch (sm_90+).
  int64_t graph_max_tokens = 1;
  bool pdl = true;
  // Per IR value id: where it lives (kNone: nowhere the device holds it).
  std::vector<BufRef> values;
  std::vector<Launch> launches;
  bool operator==(const Table&) const = default;
  // Whether some launches are the host's (a plan split by -ngl).
  bool has_host_ops() const;
};

// Launches of steps with T tokens, in order: those of plain runs, or with
// `per_op`, one launch per op (a persistent kernel's op-by-op equivalent).
std::vector<const Launch*> LaunchesFor(const Table& t, int64_t T, bool per_op = false);

std::string Serialize(const Table& t);
// Parses and validates (every index, region, range and rule; every buffer
// inside its region for every T of its launch). Errors read
// "<where>: launch 12 (vb_rope, op 40) arg 3: arena bytes [..) exceed the region of N bytes".
absl::StatusOr<Table> Parse(absl::Span<const uint8_t> bytes, const std::string& where);
// The validation alone (the compiler runs it on what it produced).
absl::Status Validate(const Table& t, const std::string& where);

// Human-readable listing (vibrantc dump-ir --launches).
std::string Describe(const Table& t);

}  // namespace vibrant::dispatch

#endif  // VIBRANT_RUNTIME_DISPATCH_H_
