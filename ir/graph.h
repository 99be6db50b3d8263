// The static tensor IR: a graph of ops over tensor values with static shapes.
//
// Design (see docs/architecture.md):
// - One graph describes one step of the model. The number of tokens in a step
//   is the single symbolic dimension T (written kTokens in shapes, "T" in
//   text), bounded by Graph::max_tokens. Decode is T=1, prefill any
//   1 <= T <= max_tokens; everything else is static. Memory is planned for the
//   bound; kernels take T at run time.
// - Values are in SSA form: each is defined once, by a graph input/weight/KV
//   declaration or by one op's output. Ops are kept in a valid execution order.
// - Quantized weight types are ordinary dtypes: MatMul takes a q4_K weight.
// - Shapes are row-major, outermost first: a GGUF weight with ggml dims
//   [K, N] (ne0 = K innermost) is the IR matrix [N, K].
#ifndef VIBRANT_IR_GRAPH_H_
#define VIBRANT_IR_GRAPH_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"
#include "ir/dtype.h"
#include "ir/ops.h"

namespace vibrant::ir {

// The symbolic token dimension T in a shape.
inline constexpr int64_t kTokens = -1;
// The most ranks a tensor-parallel graph may be sharded for (meta tp).
inline constexpr int64_t kMaxTpRanks = 64;

using Shape = std::vector<int64_t>;
std::string ShapeToString(const Shape& s);  // "[T, 256]"
// Number of elements with T replaced by `tokens`.
int64_t NumElements(const Shape& s, int64_t tokens);

enum class Storage : uint8_t {
  kActivation,  // produced and consumed within a step; planned in the arena
  kWeight,      // read-only model parameter; `source` names the GGUF tensor
  kKvCache,     // persistent across steps; [n_ctx, n_kv_heads, head_dim]
  kInput,       // fed by the runtime each step (token ids, positions)
  kOutput,      // read by the runtime after the step (logits)
};
std::string_view StorageName(Storage s);

enum class Device : uint8_t { kUnassigned, kCpu, kCuda };
std::string_view DeviceName(Device d);

using ValueId = int32_t;
using OpId = int32_t;

struct Value {
  std::string name;  // unique in the graph
  DType dtype = DType::kF32;
  Shape shape;
  Storage storage = Storage::kActivation;
  Device device = Device::kUnassigned;
  std::string source;  // weights: GGUF tensor name
  // Weights: where the value starts in its GGUF tensor, in elements (a whole
  // number of the value's rows): the value is the tensor's elements
  // [source_offset, source_offset + elements) (backends check that they lie
  // inside the tensor). Lets one tensor feed several weights without a copy
  // (phi3's fused attn_qkv split into q, k and v; its ffn_up into gate and
  // up). 0 for every other value.
  int64_t source_offset = 0;
  // Tensor-parallel shards (passes/shard_tensor_parallel.h; graphs with meta
  // tp = N): rank r's value starts rank_offsets[r] elements further into the
  // tensor (empty: every rank reads the same elements). Row i of the value is
  // the tensor's elements [base + i * stride, base + i * stride + row), base =
  // source_offset + rank_offsets[r], row = the value's row length and stride =
  // source_row_stride, or the row length when 0. A column-parallel shard is
  // a block of rows (offsets of whole rows, stride 0); a row-parallel shard is
  // a block of columns of every row (column offsets, stride = the tensor's
  // row length). Offsets and strides are whole quantization blocks.
  std::vector<int64_t> rank_offsets;
  int64_t source_row_stride = 0;
  OpId producer = -1;  // -1 for inputs, weights, KV caches
  // For ops that update storage in place (KvStore), the value whose storage
  // this one shares; -1 otherwise.
  ValueId alias_of = -1;
  // Byte offset in its device's step arena (Graph::memory), set by the memory
  // planner (passes/plan_memory.h) for every value the arena holds: step
  // inputs, activations, outputs, and views (reshape) of those, which carry
  // their root's offset. -1: not planned, or not in the arena (weights, KV
  // caches and their kv_store versions).
  int64_t arena_offset = -1;
};

// What the memory planner decided for one device (passes/plan_memory.h).
struct DeviceMemory {
  int64_t arena_bytes = 0;  // the step arena, sized for T = max_tokens
  int64_t kv_bytes = 0;     // KV caches, allocated separately (persistent)
};

// Attribute values: integers, floats, strings, integer lists.
using AttrValue = std::variant<int64_t, double, std::string, std::vector<int64_t>>;
using Attrs = std::map<std::string, AttrValue>;

class Graph;

// One kernel variant of an op for a range of token counts, chosen by the
// select-kernels pass (passes/select_kernels.h) for ops on a device with
// generated kernels (cuda). `launches` lists, in order, what one step of
// T in [t_min, t_max] enqueues for the op: kernel names ("vb_mvs_q4_K"),
// "cublaslt" for a cuBLASLt GEMM, "memcpy" for a device copy. The plan's
// dispatch table (runtime/dispatch.h) holds exactly these launches with
// their geometry and arguments, so the final IR names every launch of a step.
struct KernelVariant {
  int64_t t_min = 1;
  int64_t t_max = 1;
  std::string name;  // the variant ("matvec_q8.multi", "gemm.cublaslt", ...)
  Attrs params;      // its parameters (e.g. {chunk=64}); codegen reads them
  std::vector<std::string> launches;

  bool operator==(const KernelVariant&) const = default;
};

struct Op {
  OpKind kind;
  std::vector<ValueId> inputs;
  std::vector<ValueId> outputs;
  Attrs attrs;
  Device device = Device::kUnassigned;
  // For OpKind::kFused: the elementwise expression the op computes, as a
  // graph whose inputs are this op's inputs (same order) and whose outputs are
  // this op's outputs. Null otherwise.
  std::shared_ptr<const Graph> body;
  // The kernels that run the op, by token count (select-kernels); empty
  // before the pass and for cpu ops with only one CPU kernel (the CPU's
  // variants have no launches: runtime/cpu/kernel_select.h). Ranges are
  // ascending and disjoint and cover 1..max_tokens; an op with no work (a
  // view) has one variant with no launches.
  std::vector<KernelVariant> kernels;

  int64_t IntAttr(const std::string& key, int64_t dflt = 0) const;
  double FloatAttr(const std::string& key, double dflt = 0) const;
  std::string StringAttr(const std::string& key, const std::string& dflt = "") const;
};

class Graph {
 public:
  // Model-level facts carried with the graph (architecture, hyperparameters).
  Attrs meta;
  // Upper bound of T.
  int64_t max_tokens = 1;
  // The memory plan, by device; empty until planned. Value::arena_offset
  // places each arena value inside its device's arena.
  std::map<Device, DeviceMemory> memory;

  ValueId AddValue(Value v);
  // Declares a graph input / weight / KV cache (no producer).
  ValueId AddInput(std::string name, DType dtype, Shape shape);
  // `source_offset`: see Value::source_offset (a view of part of the tensor).
  ValueId AddWeight(std::string name, DType dtype, Shape shape, std::string source,
                    int64_t source_offset = 0);
  ValueId AddKvCache(std::string name, DType dtype, Shape shape);
  // Appends an op producing one new activation value named `out_name`, whose
  // dtype and shape are inferred (ir/ops.h). Fails on a shape/dtype mismatch.
  absl::StatusOr<ValueId> AddOp(OpKind kind, std::vector<ValueId> inputs,
                                std::string out_name, Attrs attrs = {});
  // The same for ops with several outputs (multi_matmul), named `out_names`.
  absl::StatusOr<std::vector<ValueId>> AddMultiOp(OpKind kind, std::vector<ValueId> inputs,
                                                  std::vector<std::string> out_names,
                                                  Attrs attrs = {});
  // Appends an op whose outputs were already created with AddValue.
  OpId AddRawOp(Op op);
  // Adds `v` to outputs(); an activation becomes Storage::kOutput.
  void MarkOutput(ValueId v);

  const std::vector<Value>& values() const { return values_; }
  std::vector<Value>& mutable_values() { return values_; }
  const std::vector<Op>& ops() const { return ops_; }
  std::vector<Op>& mutable_ops() { return ops_; }
  const Value& value(ValueId id) const { return values_[id]; }
  Value& mutable_value(ValueId id) { return values_[id]; }
  const std::vector<ValueId>& outputs() const { return outputs_; }
  std::vector<ValueId>& mutable_outputs() { return outputs_; }
  // -1 when absent. Names must be unique (the verifier rejects duplicates);
  // with duplicates, the first value of that name.
  ValueId FindValue(const std::string& name) const;

  // Rebuilds producer links and the name index after ops/values were edited.
  void Reindex();

 private:
  std::vector<Value> values_;
  std::vector<Op> ops_;
  std::vector<ValueId> outputs_;
  std::map<std::string, ValueId> by_name_;
};

// The output value an op of `kind` over `inputs` of `g` produces: name
// `out_name`, inferred dtype and shape, storage (kActivation; kKvCache for
// kv_store, with alias_of = the KV cache declaration it updates). Checks the
// inputs and attributes against the op's semantics (ir/ops.h); errors read
// "matmul blk.0.attn_q: x has 256 columns but weight blk.0.attn_q.weight has
// 128". Not defined for kFused (an error). Used by AddOp and the verifier.
absl::StatusOr<Value> InferOpOutput(const Graph& g, OpKind kind, const std::vector<ValueId>& inputs,
                                    const Attrs& attrs, const std::string& out_name);

// The same for any op but fused, one value per output: multi_matmul has one
// per weight. `out_names` gives their names (as many as the op has outputs).
absl::StatusOr<std::vector<Value>> InferOpOutputs(const Graph& g, OpKind kind,
                                                  const std::vector<ValueId>& inputs,
                                                  const Attrs& attrs,
                                                  const std::vector<std::string>& out_names);

// A graph's tensor-parallel rank count: meta "tp" (passes/shard_tensor_parallel.h),
// 1 when absent, 0 when it is not an integer.
int64_t TpRanks(const Graph& g);

// The step's logits output: the output named "logits", or the only output.
// It must be f32. Backends use this to find what Step returns.
absl::StatusOr<ValueId> FindLogitsOutput(const Graph& g);

}  // namespace vibrant::ir

#endif  // VIBRANT_IR_GRAPH_H_
