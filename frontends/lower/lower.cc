#include "frontends/lower/lower.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"

namespace vibrant {
namespace {

using ir::Attrs;
using ir::Graph;
using ir::kTokens;
using ir::OpKind;
using ir::ValueId;

// Hyperparameters are bounded so that every product the lowering forms
// (e.g. n_head * head_dim, n_ctx * n_head_kv * head_dim) stays far from
// int64 overflow; real models are orders of magnitude below the bound.
constexpr int64_t kMaxDim = int64_t{1} << 24;

#define VIBRANT_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                  \
  if (!tmp.ok()) return tmp.status();                 \
  lhs = std::move(*tmp)
#define VIBRANT_LOWER_CONCAT2(a, b) a##b
#define VIBRANT_LOWER_CONCAT(a, b) VIBRANT_LOWER_CONCAT2(a, b)
#define ASSIGN_OR_RETURN(lhs, expr) \
  VIBRANT_ASSIGN_OR_RETURN_IMPL(VIBRANT_LOWER_CONCAT(_s_, __LINE__), lhs, expr)
#define RETURN_IF_ERROR(expr)            \
  do {                                   \
    absl::Status _st = (expr);           \
    if (!_st.ok()) return _st;           \
  } while (0)

std::string DimsToString(const std::vector<int64_t>& dims) {
  return absl::StrCat("[", absl::StrJoin(dims, ", "), "]");
}

struct Hparams {
  std::string arch;
  int64_t n_ctx_train = 0;
  int64_t n_embd = 0;
  int64_t n_layer = 0;
  int64_t n_ff = 0;
  int64_t n_head = 0;
  int64_t n_head_kv = 0;
  int64_t head_dim = 0;
  int64_t rope_dim = 0;
  int64_t rope_mode = 0;
  int64_t n_vocab = 0;
  double rope_freq_base = 10000.0;
  double rope_freq_scale = 1.0;
  double rms_eps = 0;
  // What the architecture adds to the llama block (see Build).
  bool qkv_bias = false;     // qwen2: attn_{q,k,v}.bias
  bool qk_norm = false;      // qwen3, qwen3moe, gemma3: per-head rms_norm of q and k
  bool post_norms = false;   // gemma3: post_attention_norm, post_ffw_norm
  bool embd_scale = false;   // gemma3: embeddings times sqrt(n_embd)
  bool gelu = false;         // gemma3: gelu(gate) * up instead of silu(gate) * up
  double attn_scale = 0;     // softmax scale (1/sqrt(head_dim) unless the arch says)
  // qwen3moe: experts per layer, used per token, expert FFN width.
  int64_t n_expert = 0;
  int64_t n_expert_used = 0;
  int64_t n_ff_exp = 0;
  // gemma3 sliding-window layers: window, pattern (layer l is local iff
  // l % pattern < pattern - 1), their rope base; global layers use
  // rope_freq_base / rope_freq_scale.
  int64_t swa_window = 0;
  int64_t swa_pattern = 0;
  double rope_freq_base_swa = 10000.0;
};

// What a tensor is used as; decides which dtypes are acceptable.
enum class TensorRole {
  kMatrix,  // matmul weight or embedding table: any float or quantized type
  kVector,  // norm scale, bias, rope factors: f32
};

// What lowering reads of a model: metadata and tensor infos, never tensor
// data. A GGUF file, or shapes alone (ModelShapes).
class ModelSource {
 public:
  virtual ~ModelSource() = default;
  virtual const std::string& path() const = 0;
  virtual const GgufValue* Find(std::string_view key) const = 0;
  virtual const GgufTensorInfo* FindTensor(std::string_view name) const = 0;
  virtual const std::vector<GgufTensorInfo>& tensors() const = 0;
};

class FileSource : public ModelSource {
 public:
  explicit FileSource(const GgufFile& f) : f_(f) {}
  const std::string& path() const override { return f_.path(); }
  const GgufValue* Find(std::string_view key) const override { return f_.Find(key); }
  const GgufTensorInfo* FindTensor(std::string_view name) const override { return f_.FindTensor(name); }
  const std::vector<GgufTensorInfo>& tensors() const override { return f_.tensors(); }

 private:
  const GgufFile& f_;
};

class ShapesSource : public ModelSource {
 public:
  explicit ShapesSource(const ModelShapes& m) : m_(m) {
    // The first of repeated names wins, as in GgufFile (which rejects them).
    for (size_t i = 0; i < m.metadata.size(); ++i) keys_.emplace(m.metadata[i].first, i);
    for (size_t i = 0; i < m.tensors.size(); ++i) tensors_.emplace(m.tensors[i].name, i);
  }
  const std::string& path() const override { return m_.name; }
  const GgufValue* Find(std::string_view key) const override {
    auto it = keys_.find(std::string(key));
    return it == keys_.end() ? nullptr : &m_.metadata[it->second].second;
  }
  const GgufTensorInfo* FindTensor(std::string_view name) const override {
    auto it = tensors_.find(std::string(name));
    return it == tensors_.end() ? nullptr : &m_.tensors[it->second];
  }
  const std::vector<GgufTensorInfo>& tensors() const override { return m_.tensors; }

 private:
  const ModelShapes& m_;
  std::map<std::string, size_t> keys_, tensors_;
};

class Lowerer {
 public:
  Lowerer(const ModelSource& file, const LowerOptions& opts) : file_(file), opts_(opts) {}

  absl::StatusOr<Graph> Run() {
    RETURN_IF_ERROR(ReadHparams());
    RETURN_IF_ERROR(CheckOptions());
    RETURN_IF_ERROR(Build());
    RETURN_IF_ERROR(CheckAllTensorsUsed());
    return std::move(g_);
  }

 private:
  std::string Key(std::string_view suffix) const {
    return absl::StrCat(hp_.arch, ".", std::string(suffix));
  }

  absl::Status Error(absl::string_view msg) const {
    return absl::InvalidArgumentError(absl::StrCat(file_.path(), ": ", msg));
  }
  absl::Status KeyError(const std::string& key, absl::string_view msg) const {
    return Error(absl::StrCat("metadata ", key, ": ", msg));
  }

  // An integer metadata value. Arrays (per-layer values, as some converters
  // write for feed_forward_length / head_count) are accepted when all their
  // elements are equal. Absent: `dflt` when given, else an error.
  absl::StatusOr<int64_t> IntKey(const std::string& key, std::optional<int64_t> dflt) const {
    const GgufValue* v = file_.Find(key);
    if (v == nullptr) {
      if (dflt.has_value()) return *dflt;
      return KeyError(key, "missing (required)");
    }
    int64_t out = 0;
    if (v->is_array()) {
      absl::StatusOr<const GgufArray*> arr = v->AsArray();
      if (!arr.ok()) return KeyError(key, arr.status().message());
      if ((*arr)->elems.empty()) return KeyError(key, "empty array");
      for (size_t i = 0; i < (*arr)->elems.size(); ++i) {
        absl::StatusOr<int64_t> e = (*arr)->elems[i].AsInt();
        if (!e.ok()) return KeyError(key, absl::StrCat("element ", i, ": ", e.status().message()));
        if (i == 0) {
          out = *e;
        } else if (*e != out) {
          return KeyError(key, absl::StrCat("per-layer values differ (element 0 is ", out,
                                            ", element ", i, " is ", *e,
                                            "); only uniform layers are supported"));
        }
      }
    } else {
      absl::StatusOr<int64_t> e = v->AsInt();
      if (!e.ok()) return KeyError(key, e.status().message());
      out = *e;
    }
    if (out <= 0 || out > kMaxDim) {
      return KeyError(key, absl::StrCat(out, " is out of range [1, ", kMaxDim, "]"));
    }
    return out;
  }

  // A float metadata value; absent: `dflt` when given, else an error. Must be
  // finite and > 0.
  absl::StatusOr<double> FloatKey(const std::string& key, std::optional<double> dflt) const {
    const GgufValue* v = file_.Find(key);
    if (v == nullptr) {
      if (dflt.has_value()) return *dflt;
      return KeyError(key, "missing (required)");
    }
    absl::StatusOr<double> d = v->AsFloat();
    if (!d.ok()) return KeyError(key, d.status().message());
    if (!std::isfinite(*d) || *d <= 0) {
      return KeyError(key, absl::StrCat(*d, " must be finite and positive"));
    }
    return *d;
  }

  absl::Status ReadHparams() {
    const GgufValue* arch_v = file_.Find("general.architecture");
    if (arch_v == nullptr) return KeyError("general.architecture", "missing (required)");
    absl::StatusOr<std::string_view> arch = arch_v->AsString();
    if (!arch.ok()) return KeyError("general.architecture", arch.status().message());
    hp_.arch = std::string(*arch);
    const std::string& a = hp_.arch;
    if (a != "llama" && a != "qwen2" && a != "qwen3" && a != "qwen3moe" && a != "gemma3" &&
        a != "phi3") {
      return Error(absl::StrCat("unsupported architecture '", hp_.arch,
                                "' (supported: llama, qwen2, qwen3, qwen3moe, gemma3, phi3)"));
    }
    // RoPE: "normal" for llama, NEOX (rotate halves) for the others.
    hp_.rope_mode = a == "llama" ? 0 : 2;
    hp_.qkv_bias = a == "qwen2";
    hp_.qk_norm = a == "qwen3" || a == "qwen3moe" || a == "gemma3";
    hp_.post_norms = hp_.embd_scale = hp_.gelu = a == "gemma3";

    if (a == "qwen3moe") {
      ASSIGN_OR_RETURN(hp_.n_expert, IntKey(Key("expert_count"), std::nullopt));
      ASSIGN_OR_RETURN(hp_.n_expert_used, IntKey(Key("expert_used_count"), std::nullopt));
      ASSIGN_OR_RETURN(hp_.n_ff_exp, IntKey(Key("expert_feed_forward_length"), std::nullopt));
      if (hp_.n_expert_used > hp_.n_expert) {
        return KeyError(Key("expert_used_count"),
                        absl::StrCat(hp_.n_expert_used, " exceeds ", Key("expert_count"), " = ",
                                     hp_.n_expert));
      }
    } else if (const GgufValue* ec = file_.Find(Key("expert_count")); ec != nullptr) {
      // Mixture-of-experts variants of the dense architectures (Mixtral is
      // "llama" with experts) are not supported.
      absl::StatusOr<int64_t> n = ec->AsInt();
      if (!n.ok()) return KeyError(Key("expert_count"), n.status().message());
      if (*n != 0) {
        return KeyError(Key("expert_count"),
                        absl::StrCat(*n, ": mixture-of-experts ", a, " models are not supported"));
      }
    }

    ASSIGN_OR_RETURN(hp_.n_ctx_train, IntKey(Key("context_length"), std::nullopt));
    ASSIGN_OR_RETURN(hp_.n_embd, IntKey(Key("embedding_length"), std::nullopt));
    ASSIGN_OR_RETURN(hp_.n_layer, IntKey(Key("block_count"), std::nullopt));
    // qwen3moe files state a dense width too, which the graph does not use.
    ASSIGN_OR_RETURN(hp_.n_ff, IntKey(Key("feed_forward_length"),
                                      a == "qwen3moe" ? std::optional<int64_t>(1) : std::nullopt));
    ASSIGN_OR_RETURN(hp_.n_head, IntKey(Key("attention.head_count"), std::nullopt));
    ASSIGN_OR_RETURN(hp_.n_head_kv, IntKey(Key("attention.head_count_kv"), hp_.n_head));
    if (hp_.n_head % hp_.n_head_kv != 0) {
      return KeyError(Key("attention.head_count_kv"),
                      absl::StrCat(hp_.n_head_kv, " does not divide ",
                                   Key("attention.head_count"), " = ", hp_.n_head));
    }

    const bool has_key_len = file_.Find(Key("attention.key_length")) != nullptr;
    const bool has_val_len = file_.Find(Key("attention.value_length")) != nullptr;
    if (!has_key_len || !has_val_len) {
      if (hp_.n_embd % hp_.n_head != 0) {
        return KeyError(Key("embedding_length"),
                        absl::StrCat(hp_.n_embd, " is not divisible by ",
                                     Key("attention.head_count"), " = ", hp_.n_head, " (and ",
                                     Key("attention.key_length"), " is absent)"));
      }
    }
    const int64_t dflt_hd = hp_.n_embd / hp_.n_head;
    int64_t key_len = 0, val_len = 0;
    ASSIGN_OR_RETURN(key_len, IntKey(Key("attention.key_length"), dflt_hd));
    ASSIGN_OR_RETURN(val_len, IntKey(Key("attention.value_length"), dflt_hd));
    if (key_len != val_len) {
      return KeyError(Key("attention.value_length"),
                      absl::StrCat(val_len, " differs from ", Key("attention.key_length"),
                                   " = ", key_len, "; unsupported"));
    }
    hp_.head_dim = key_len;

    ASSIGN_OR_RETURN(hp_.rope_dim, IntKey(Key("rope.dimension_count"), hp_.head_dim));
    if (hp_.rope_dim % 2 != 0 || hp_.rope_dim > hp_.head_dim) {
      return KeyError(Key("rope.dimension_count"),
                      absl::StrCat(hp_.rope_dim, " must be even and at most the head size ",
                                   hp_.head_dim));
    }
    ASSIGN_OR_RETURN(hp_.rope_freq_base, FloatKey(Key("rope.freq_base"), 10000.0));
    ASSIGN_OR_RETURN(hp_.rms_eps,
                     FloatKey(Key("attention.layer_norm_rms_epsilon"), std::nullopt));

    // Rope scaling. As in llama.cpp, an absent type means linear, and the
    // factor falls back to the older rope.scale_linear key; no factor = 1.
    std::string scaling = "linear";
    if (const GgufValue* t = file_.Find(Key("rope.scaling.type")); t != nullptr) {
      absl::StatusOr<std::string_view> s = t->AsString();
      if (!s.ok()) return KeyError(Key("rope.scaling.type"), s.status().message());
      scaling = std::string(*s);
    }
    if (scaling != "none" && scaling != "linear") {
      return KeyError(Key("rope.scaling.type"),
                      absl::StrCat("'", scaling,
                                   "' rope scaling is not supported (supported: none, linear)"));
    }
    if (scaling == "linear") {
      double factor = 1.0;
      if (file_.Find(Key("rope.scaling.factor")) != nullptr) {
        ASSIGN_OR_RETURN(factor, FloatKey(Key("rope.scaling.factor"), std::nullopt));
      } else if (file_.Find(Key("rope.scale_linear")) != nullptr) {
        ASSIGN_OR_RETURN(factor, FloatKey(Key("rope.scale_linear"), std::nullopt));
      }
      hp_.rope_freq_scale = 1.0 / factor;
    }

    // Attention scale: 1/sqrt(head_dim); Gemma 3 27B (62 layers) uses
    // 1/sqrt(n_embd / n_head) (query_pre_attn_scalar), as llama.cpp decides
    // by the layer count.
    hp_.attn_scale = 1.0 / std::sqrt(static_cast<double>(hp_.head_dim));
    if (a == "gemma3" && hp_.n_layer == 62) {
      hp_.attn_scale = 1.0 / std::sqrt(static_cast<double>(hp_.n_embd / hp_.n_head));
    }
    if (a == "gemma3") {
      // Local (sliding-window) layers: l % pattern < pattern - 1; llama.cpp's
      // default pattern is 6 (five local layers, then a global one) and the
      // local rope base 10000, unscaled.
      ASSIGN_OR_RETURN(hp_.swa_window, IntKey(Key("attention.sliding_window"), std::nullopt));
      ASSIGN_OR_RETURN(hp_.swa_pattern, IntKey(Key("attention.sliding_window_pattern"), 6));
      ASSIGN_OR_RETURN(hp_.rope_freq_base_swa, FloatKey(Key("rope.freq_base_swa"), 10000.0));
    }

    // The vocabulary size is token_embd.weight's row count.
    const GgufTensorInfo* embd = file_.FindTensor("token_embd.weight");
    if (embd == nullptr) return Error("tensor token_embd.weight: missing");
    if (embd->dims.size() != 2) {
      return Error(absl::StrCat("tensor token_embd.weight: expected 2 dims [", hp_.n_embd,
                                ", n_vocab], file has ", DimsToString(embd->dims)));
    }
    hp_.n_vocab = embd->dims[1];
    if (hp_.n_vocab <= 0 || hp_.n_vocab > kMaxDim) {
      return Error(absl::StrCat("tensor token_embd.weight: vocabulary size ", hp_.n_vocab,
                                " is out of range [1, ", kMaxDim, "]"));
    }
    return absl::OkStatus();
  }

  absl::Status CheckOptions() {
    if (opts_.max_tokens <= 0) {
      return Error(absl::StrCat("LowerOptions.max_tokens ", opts_.max_tokens,
                                " must be positive"));
    }
    n_ctx_ = opts_.n_ctx == 0 ? std::min<int64_t>(hp_.n_ctx_train, 4096) : opts_.n_ctx;
    if (n_ctx_ <= 0 || n_ctx_ > kMaxDim) {
      return Error(absl::StrCat("LowerOptions.n_ctx ", opts_.n_ctx, " is out of range [0, ",
                                kMaxDim, "]"));
    }
    for (const auto& [name, t] : {std::pair{"cache_type_k", opts_.cache_type_k},
                                  std::pair{"cache_type_v", opts_.cache_type_v}}) {
      if (t != DType::kF16 && t != DType::kF32 && t != DType::kQ8_0) {
        return Error(absl::StrCat("LowerOptions.", name, " ", std::string(DTypeName(t)),
                                  " is not supported (supported: f16, f32, q8_0)"));
      }
      if (t == DType::kQ8_0 && hp_.head_dim % 32 != 0) {
        return Error(absl::StrCat("LowerOptions.", name, " q8_0 needs a head_dim that is a ",
                                  "multiple of 32; this model's is ", hp_.head_dim));
      }
    }
    return absl::OkStatus();
  }

  // Declares the weight `name` after checking it against the expected ggml
  // dims (innermost first, as the file stores them). Returns -1 when it is
  // absent and !required.
  absl::StatusOr<ValueId> Weight(const std::string& name, std::vector<int64_t> ggml_dims,
                                 TensorRole role, bool required = true) {
    if (ValueId id = g_.FindValue(name); id >= 0) return id;
    const GgufTensorInfo* t = nullptr;
    ASSIGN_OR_RETURN(t, CheckTensor(name, ggml_dims, role, required));
    if (t == nullptr) return -1;
    // ggml dims [K, N] are the IR matrix [N, K].
    ir::Shape shape(ggml_dims.rbegin(), ggml_dims.rend());
    return g_.AddWeight(name, t->type, std::move(shape), name);
  }

  // Checks the tensor `name` against the expected ggml dims and role and
  // marks it used; null when it is absent and !required.
  absl::StatusOr<const GgufTensorInfo*> CheckTensor(const std::string& name,
                                                    const std::vector<int64_t>& ggml_dims,
                                                    TensorRole role, bool required) {
    const GgufTensorInfo* t = file_.FindTensor(name);
    if (t == nullptr) {
      if (!required) return nullptr;
      return Error(absl::StrCat("tensor ", name, ": missing (required by the ", hp_.arch,
                                " graph, expected shape ", DimsToString(ggml_dims), ")"));
    }
    if (t->dims != ggml_dims) {
      return Error(absl::StrCat("tensor ", name, ": expected shape ", DimsToString(ggml_dims),
                                ", file has ", DimsToString(t->dims)));
    }
    const DTypeInfo& info = GetDTypeInfo(t->type);
    if (role == TensorRole::kVector) {
      if (t->type != DType::kF32) {
        return Error(absl::StrCat("tensor ", name, ": expected type f32, file has ",
                                  std::string(info.name)));
      }
    } else {
      if (absl::Status s = CheckSupported(t->type); !s.ok()) {
        return absl::Status(s.code(), absl::StrCat(file_.path(), ": tensor ", name, ": ", s.message()));
      }
      if (t->type == DType::kI8 || t->type == DType::kI16 || t->type == DType::kI32 ||
          t->type == DType::kQ8_K) {
        return Error(absl::StrCat("tensor ", name, ": type ", std::string(info.name),
                                  " is not supported for a weight matrix"));
      }
      if (ggml_dims[0] % info.block_size != 0) {
        return Error(absl::StrCat("tensor ", name, ": row length ", ggml_dims[0],
                                  " is not a multiple of the ", std::string(info.name),
                                  " block size ", info.block_size));
      }
    }
    used_.insert(name);
    return t;
  }

  absl::StatusOr<ValueId> Op(OpKind kind, std::vector<ValueId> inputs, const std::string& name,
                             Attrs attrs = {}) {
    absl::StatusOr<ValueId> v = g_.AddOp(kind, std::move(inputs), name, std::move(attrs));
    if (!v.ok()) {
      return absl::Status(v.status().code(),
                          absl::StrCat(file_.path(), ": lowering op ", name, " (",
                                       std::string(ir::OpName(kind)),
                                       "): ", v.status().message()));
    }
    return *v;
  }

  // x @ W^T (+ bias as a separate add, so that fusion can fold it into the
  // next elementwise op). `base` is the GGUF tensor prefix, e.g. "blk.0.attn_q".
  absl::StatusOr<ValueId> Linear(ValueId x, const std::string& base, int64_t k, int64_t n,
                                 const std::string& out_name, bool bias_required) {
    ValueId w, b, y;
    ASSIGN_OR_RETURN(w, Weight(base + ".weight", {k, n}, TensorRole::kMatrix));
    ASSIGN_OR_RETURN(b, Weight(base + ".bias", {n}, TensorRole::kVector, bias_required));
    if (b < 0) return Op(OpKind::kMatMul, {x, w}, out_name);
    ASSIGN_OR_RETURN(y, Op(OpKind::kMatMul, {x, w}, out_name + "_mm"));
    return Op(OpKind::kAdd, {y, b}, out_name);
  }

  // rms_norm(x) * weight.
  absl::StatusOr<ValueId> Norm(ValueId x, const std::string& weight, const std::string& out_name) {
    ValueId w, y;
    ASSIGN_OR_RETURN(w, Weight(weight, {hp_.n_embd}, TensorRole::kVector));
    ASSIGN_OR_RETURN(y, Op(OpKind::kRmsNorm, {x}, out_name + "_rms",
                           {{"eps", AttrValue(hp_.rms_eps)}}));
    return Op(OpKind::kMul, {y, w}, out_name);
  }

  // Rows [row0, row0 + rows) of the 2-D tensor `tensor` (ggml dims {k,
  // total_rows}) as the weight value `value_name`: a view, not a copy
  // (ir/graph.h, Value::source_offset). phi3's fused attn_qkv and ffn_up.
  absl::StatusOr<ValueId> WeightRows(const std::string& tensor, int64_t k, int64_t total_rows,
                                     int64_t row0, int64_t rows, const std::string& value_name) {
    const GgufTensorInfo* t = nullptr;
    ASSIGN_OR_RETURN(t, CheckTensor(tensor, {k, total_rows}, TensorRole::kMatrix, true));
    return g_.AddWeight(value_name, t->type, {rows, k}, tensor, row0 * k);
  }

  // rms_norm over the last dim of x[T, H, hd] times a per-head weight [hd]
  // (qwen3 / gemma3 q and k norms).
  absl::StatusOr<ValueId> HeadNorm(ValueId x, const std::string& weight, const std::string& out_name) {
    ValueId w, y;
    ASSIGN_OR_RETURN(w, Weight(weight, {hp_.head_dim}, TensorRole::kVector));
    ASSIGN_OR_RETURN(y, Op(OpKind::kRmsNorm, {x}, out_name + "_rms",
                           {{"eps", AttrValue(hp_.rms_eps)}}));
    return Op(OpKind::kMul, {y, w}, out_name);
  }

  // Whether layer l of a gemma3 model is a local (sliding-window) one.
  bool IsSwaLayer(int64_t l) const {
    return hp_.swa_window > 0 && l % hp_.swa_pattern < hp_.swa_pattern - 1;
  }

  // The mixture-of-experts FFN of qwen3moe (ir/ops.h): router logits, the
  // top-k experts and their renormalized weights, gate/up/down of the chosen
  // experts (matmul_id), their weighted sum.
  absl::StatusOr<ValueId> MoeFfn(ValueId f, const std::string& blk, const std::string& L) {
    const int64_t D = hp_.n_embd, E = hp_.n_expert, F = hp_.n_ff_exp;
    ValueId router, logits, ids, weights, gate_w, up_w, down_w, gate, up, act, y;
    ASSIGN_OR_RETURN(router, Weight(blk + "ffn_gate_inp.weight", {D, E}, TensorRole::kMatrix));
    ASSIGN_OR_RETURN(gate_w, Weight(blk + "ffn_gate_exps.weight", {D, F, E}, TensorRole::kMatrix));
    ASSIGN_OR_RETURN(up_w, Weight(blk + "ffn_up_exps.weight", {D, F, E}, TensorRole::kMatrix));
    ASSIGN_OR_RETURN(down_w, Weight(blk + "ffn_down_exps.weight", {F, D, E}, TensorRole::kMatrix));
    ASSIGN_OR_RETURN(logits, Op(OpKind::kMatMul, {f, router}, "ffn_moe_logits" + L));
    ASSIGN_OR_RETURN(ids, Op(OpKind::kMoeTopK, {logits}, "ffn_moe_topk" + L,
                             {{"k", AttrValue(hp_.n_expert_used)}}));
    ASSIGN_OR_RETURN(weights, Op(OpKind::kMoeWeights, {logits, ids}, "ffn_moe_weights" + L,
                                 {{"norm", AttrValue(int64_t{1})}}));
    ASSIGN_OR_RETURN(gate, Op(OpKind::kMatMulId, {f, gate_w, ids}, "ffn_moe_gate" + L));
    ASSIGN_OR_RETURN(up, Op(OpKind::kMatMulId, {f, up_w, ids}, "ffn_moe_up" + L));
    ASSIGN_OR_RETURN(gate, Op(OpKind::kSilu, {gate}, "ffn_moe_silu" + L));
    ASSIGN_OR_RETURN(act, Op(OpKind::kMul, {gate, up}, "ffn_moe_act" + L));
    ASSIGN_OR_RETURN(y, Op(OpKind::kMatMulId, {act, down_w, ids}, "ffn_moe_down" + L));
    return Op(OpKind::kMoeSum, {y, weights}, "ffn_moe_out" + L);
  }

  using AttrValue = ir::AttrValue;

  absl::Status Build() {
    const int64_t D = hp_.n_embd, H = hp_.n_head, KVH = hp_.n_head_kv, hd = hp_.head_dim;
    const std::string& arch = hp_.arch;

    g_.max_tokens = std::min(opts_.max_tokens, n_ctx_);
    Attrs& m = g_.meta;
    m["arch"] = hp_.arch;
    m["n_layer"] = hp_.n_layer;
    m["n_embd"] = hp_.n_embd;
    m["n_head"] = hp_.n_head;
    m["n_head_kv"] = hp_.n_head_kv;
    m["head_dim"] = hp_.head_dim;
    m["n_ff"] = hp_.n_ff;
    m["n_vocab"] = hp_.n_vocab;
    m["n_ctx"] = n_ctx_;
    m["n_ctx_train"] = hp_.n_ctx_train;
    m["rope_dim"] = hp_.rope_dim;
    m["rope_mode"] = hp_.rope_mode;
    m["rope_freq_base"] = hp_.rope_freq_base;
    m["rope_freq_scale"] = hp_.rope_freq_scale;
    m["rms_eps"] = hp_.rms_eps;
    m["all_logits"] = int64_t{opts_.all_logits ? 1 : 0};
    if (hp_.n_expert > 0) {
      m["n_expert"] = hp_.n_expert;
      m["n_expert_used"] = hp_.n_expert_used;
      m["n_ff_exp"] = hp_.n_ff_exp;
    }
    if (hp_.swa_window > 0) {
      m["swa_window"] = hp_.swa_window;
      m["swa_pattern"] = hp_.swa_pattern;
      m["rope_freq_base_swa"] = hp_.rope_freq_base_swa;
    }

    const ValueId tokens = g_.AddInput("tokens", DType::kI32, {kTokens});
    const ValueId positions = g_.AddInput("positions", DType::kI32, {kTokens});

    ValueId tok_embd, inp;
    ASSIGN_OR_RETURN(tok_embd, Weight("token_embd.weight", {D, hp_.n_vocab}, TensorRole::kMatrix));
    ASSIGN_OR_RETURN(inp, Op(OpKind::kEmbedding, {tok_embd, tokens}, "inp_embd"));
    if (hp_.embd_scale) {
      // ggml_scale(inpL, sqrtf(n_embd)): the float square root.
      const float s = std::sqrt(static_cast<float>(D));
      ASSIGN_OR_RETURN(inp, Op(OpKind::kScale, {inp}, "inp_scaled",
                               {{"scale", AttrValue(static_cast<double>(s))}}));
    }

    // llama 3.1's long-context frequency factors, shared by all layers.
    ValueId freq_factors;
    ASSIGN_OR_RETURN(freq_factors, Weight("rope_freqs.weight", {hp_.rope_dim / 2},
                                          TensorRole::kVector, /*required=*/false));

    for (int64_t l = 0; l < hp_.n_layer; ++l) {
      const std::string L = absl::StrCat(".", l);
      const std::string blk = absl::StrCat("blk.", l, ".");
      const bool swa = IsSwaLayer(l);
      // gemma3's local layers have their own rope base and no scaling.
      const Attrs rope_attrs = {
          {"mode", AttrValue(hp_.rope_mode)},
          {"n_rot", AttrValue(hp_.rope_dim)},
          {"freq_base", AttrValue(swa ? hp_.rope_freq_base_swa : hp_.rope_freq_base)},
          {"freq_scale", AttrValue(swa ? 1.0 : hp_.rope_freq_scale)}};
      Attrs attn_attrs = {{"scale", AttrValue(hp_.attn_scale)}};
      if (swa) attn_attrs["window"] = AttrValue(hp_.swa_window);

      ValueId x;
      ASSIGN_OR_RETURN(x, Norm(inp, blk + "attn_norm.weight", "attn_norm" + L));

      ValueId q, k, v;
      if (arch == "phi3" && file_.FindTensor(blk + "attn_qkv.weight") != nullptr) {
        // One fused projection; q, k and v are row views of its weight, so
        // they stay three matmuls (combined again into one launch by the
        // passes) and nothing is copied.
        const std::string t = blk + "attn_qkv.weight";
        const int64_t n = (H + 2 * KVH) * hd;
        ValueId wq, wk, wv;
        ASSIGN_OR_RETURN(wq, WeightRows(t, D, n, 0, H * hd, t + ".q"));
        ASSIGN_OR_RETURN(wk, WeightRows(t, D, n, H * hd, KVH * hd, t + ".k"));
        ASSIGN_OR_RETURN(wv, WeightRows(t, D, n, (H + KVH) * hd, KVH * hd, t + ".v"));
        ASSIGN_OR_RETURN(q, Op(OpKind::kMatMul, {x, wq}, "q" + L));
        ASSIGN_OR_RETURN(k, Op(OpKind::kMatMul, {x, wk}, "k" + L));
        ASSIGN_OR_RETURN(v, Op(OpKind::kMatMul, {x, wv}, "v" + L));
      } else {
        ASSIGN_OR_RETURN(q, Linear(x, blk + "attn_q", D, H * hd, "q" + L, hp_.qkv_bias));
        ASSIGN_OR_RETURN(k, Linear(x, blk + "attn_k", D, KVH * hd, "k" + L, hp_.qkv_bias));
        ASSIGN_OR_RETURN(v, Linear(x, blk + "attn_v", D, KVH * hd, "v" + L, hp_.qkv_bias));
      }
      ASSIGN_OR_RETURN(q, Op(OpKind::kReshape, {q}, "q_heads" + L,
                             {{"shape", AttrValue(std::vector<int64_t>{kTokens, H, hd})}}));
      ASSIGN_OR_RETURN(k, Op(OpKind::kReshape, {k}, "k_heads" + L,
                             {{"shape", AttrValue(std::vector<int64_t>{kTokens, KVH, hd})}}));
      ASSIGN_OR_RETURN(v, Op(OpKind::kReshape, {v}, "v_heads" + L,
                             {{"shape", AttrValue(std::vector<int64_t>{kTokens, KVH, hd})}}));
      if (hp_.qk_norm) {
        ASSIGN_OR_RETURN(q, HeadNorm(q, blk + "attn_q_norm.weight", "q_norm" + L));
        ASSIGN_OR_RETURN(k, HeadNorm(k, blk + "attn_k_norm.weight", "k_norm" + L));
      }

      std::vector<ValueId> rope_q = {q, positions}, rope_k = {k, positions};
      if (freq_factors >= 0) {
        rope_q.push_back(freq_factors);
        rope_k.push_back(freq_factors);
      }
      ASSIGN_OR_RETURN(q, Op(OpKind::kRope, rope_q, "q_rope" + L, rope_attrs));
      ASSIGN_OR_RETURN(k, Op(OpKind::kRope, rope_k, "k_rope" + L, rope_attrs));

      const ValueId cache_k = g_.AddKvCache("cache_k" + L, opts_.cache_type_k, {n_ctx_, KVH, hd});
      const ValueId cache_v = g_.AddKvCache("cache_v" + L, opts_.cache_type_v, {n_ctx_, KVH, hd});
      ValueId kc, vc;
      ASSIGN_OR_RETURN(kc, Op(OpKind::kKvStore, {k, cache_k, positions}, "k_cache" + L));
      ASSIGN_OR_RETURN(vc, Op(OpKind::kKvStore, {v, cache_v, positions}, "v_cache" + L));
      // The stored cache shares the cache's storage (ir/ops.h, kv_store).
      if (g_.value(kc).alias_of < 0) g_.mutable_value(kc).alias_of = cache_k;
      if (g_.value(vc).alias_of < 0) g_.mutable_value(vc).alias_of = cache_v;

      ValueId attn;
      ASSIGN_OR_RETURN(attn, Op(OpKind::kAttention, {q, kc, vc, positions}, "attn" + L,
                                attn_attrs));
      ASSIGN_OR_RETURN(attn, Op(OpKind::kReshape, {attn}, "attn_flat" + L,
                                {{"shape", AttrValue(std::vector<int64_t>{kTokens, H * hd})}}));
      ASSIGN_OR_RETURN(attn, Linear(attn, blk + "attn_output", H * hd, D, "attn_out" + L,
                                    /*bias_required=*/false));
      if (hp_.post_norms) {
        ASSIGN_OR_RETURN(attn, Norm(attn, blk + "post_attention_norm.weight", "attn_post_norm" + L));
      }
      ValueId ffn_inp;
      ASSIGN_OR_RETURN(ffn_inp, Op(OpKind::kAdd, {attn, inp}, "ffn_inp" + L));

      ValueId f, ffn_out;
      ASSIGN_OR_RETURN(f, Norm(ffn_inp, blk + "ffn_norm.weight", "ffn_norm" + L));
      if (hp_.n_expert > 0) {
        ASSIGN_OR_RETURN(ffn_out, MoeFfn(f, blk, L));
      } else {
        ValueId gate, up, act;
        const int64_t F = hp_.n_ff;
        if (arch == "phi3" && file_.FindTensor(blk + "ffn_gate.weight") == nullptr) {
          // ffn_up holds gate (rows 0..F-1) and up (rows F..2F-1): two views.
          const std::string t = blk + "ffn_up.weight";
          ValueId wg, wu;
          ASSIGN_OR_RETURN(wg, WeightRows(t, D, 2 * F, 0, F, t + ".gate"));
          ASSIGN_OR_RETURN(wu, WeightRows(t, D, 2 * F, F, F, t + ".up"));
          ASSIGN_OR_RETURN(gate, Op(OpKind::kMatMul, {f, wg}, "ffn_gate" + L));
          ASSIGN_OR_RETURN(up, Op(OpKind::kMatMul, {f, wu}, "ffn_up" + L));
        } else {
          ASSIGN_OR_RETURN(gate, Linear(f, blk + "ffn_gate", D, F, "ffn_gate" + L, false));
          ASSIGN_OR_RETURN(up, Linear(f, blk + "ffn_up", D, F, "ffn_up" + L, false));
        }
        if (hp_.gelu) {
          ASSIGN_OR_RETURN(gate, Op(OpKind::kGelu, {gate}, "ffn_gelu" + L));
        } else {
          ASSIGN_OR_RETURN(gate, Op(OpKind::kSilu, {gate}, "ffn_silu" + L));
        }
        ASSIGN_OR_RETURN(act, Op(OpKind::kMul, {gate, up}, "ffn_act" + L));
        ASSIGN_OR_RETURN(ffn_out, Linear(act, blk + "ffn_down", F, D, "ffn_out" + L, false));
      }
      if (hp_.post_norms) {
        ASSIGN_OR_RETURN(ffn_out, Norm(ffn_out, blk + "post_ffw_norm.weight", "ffn_post_norm" + L));
      }
      ASSIGN_OR_RETURN(inp, Op(OpKind::kAdd, {ffn_out, ffn_inp}, "l_out" + L));
    }

    ValueId cur, out_w, logits;
    ASSIGN_OR_RETURN(cur, Norm(inp, "output_norm.weight", "result_norm"));
    if (!opts_.all_logits) {
      ASSIGN_OR_RETURN(cur, Op(OpKind::kLastRow, {cur}, "result_last"));
    }
    // Tied embeddings: without output.weight the token embedding table is
    // the output projection.
    ASSIGN_OR_RETURN(out_w, Weight("output.weight", {D, hp_.n_vocab}, TensorRole::kMatrix,
                                   /*required=*/false));
    if (out_w < 0) out_w = tok_embd;
    ASSIGN_OR_RETURN(logits, Op(OpKind::kMatMul, {cur, out_w}, "logits"));
    g_.MarkOutput(logits);
    return absl::OkStatus();
  }

  // Like llama.cpp, refuse files with tensors the graph does not use: they
  // mean a model variant this lowering does not understand.
  absl::Status CheckAllTensorsUsed() const {
    for (const GgufTensorInfo& t : file_.tensors()) {
      if (used_.count(t.name) == 0) {
        return Error(absl::StrCat("tensor ", t.name, ": not used by the ", hp_.arch,
                                  " graph (unsupported model variant)"));
      }
    }
    return absl::OkStatus();
  }

  const ModelSource& file_;
  const LowerOptions& opts_;
  Hparams hp_;
  int64_t n_ctx_ = 0;
  Graph g_;
  std::set<std::string> used_;
};

}  // namespace

absl::StatusOr<ir::Graph> LowerGguf(const GgufFile& file, const LowerOptions& opts) {
  return Lowerer(FileSource(file), opts).Run();
}

absl::StatusOr<ir::Graph> LowerShapes(const ModelShapes& model, const LowerOptions& opts) {
  return Lowerer(ShapesSource(model), opts).Run();
}

ModelShapes ShapesFromSpec(const TransformerSpec& spec) {
  ModelShapes m;
  m.name = spec.name.empty() ? absl::StrCat("<", spec.arch, " shapes>") : spec.name;
  const std::string& a = spec.arch;
  auto u32 = [&](const std::string& key, int64_t v) {
    m.metadata.emplace_back(key, GgufValue::Uint(GgufType::kUint32, static_cast<uint64_t>(v)));
  };
  auto f32 = [&](const std::string& key, double v) {
    // Rounded to float, as a GGUF file stores it.
    m.metadata.emplace_back(key, GgufValue::Float(GgufType::kFloat32, static_cast<float>(v)));
  };
  const int64_t hd = spec.head_dim > 0 ? spec.head_dim : spec.n_embd / std::max<int64_t>(spec.n_head, 1);
  m.metadata.emplace_back("general.architecture", GgufValue::String(a));
  u32(a + ".context_length", spec.n_ctx_train);
  u32(a + ".embedding_length", spec.n_embd);
  u32(a + ".block_count", spec.n_layer);
  u32(a + ".feed_forward_length", spec.n_ff);
  u32(a + ".attention.head_count", spec.n_head);
  u32(a + ".attention.head_count_kv", spec.n_head_kv);
  if (spec.head_dim > 0) {
    u32(a + ".attention.key_length", hd);
    u32(a + ".attention.value_length", hd);
  }
  f32(a + ".rope.freq_base", spec.rope_freq_base);
  f32(a + ".attention.layer_norm_rms_epsilon", spec.rms_eps);
  auto tensor = [&](std::string name, std::vector<int64_t> dims, DType type) {
    GgufTensorInfo t;
    t.name = std::move(name);
    t.dims = std::move(dims);
    t.type = type;
    m.tensors.push_back(std::move(t));
  };
  const int64_t D = spec.n_embd, q = spec.n_head * hd, kv = spec.n_head_kv * hd;
  const DType mat = spec.matrix_type;
  tensor("token_embd.weight", {D, spec.n_vocab}, mat);
  for (int64_t l = 0; l < spec.n_layer; ++l) {
    const std::string b = absl::StrCat("blk.", l, ".");
    tensor(b + "attn_norm.weight", {D}, DType::kF32);
    tensor(b + "attn_q.weight", {D, q}, mat);
    tensor(b + "attn_k.weight", {D, kv}, mat);
    tensor(b + "attn_v.weight", {D, kv}, mat);
    if (spec.qkv_bias) {
      tensor(b + "attn_q.bias", {q}, DType::kF32);
      tensor(b + "attn_k.bias", {kv}, DType::kF32);
      tensor(b + "attn_v.bias", {kv}, DType::kF32);
    }
    tensor(b + "attn_output.weight", {q, D}, mat);
    tensor(b + "ffn_norm.weight", {D}, DType::kF32);
    tensor(b + "ffn_gate.weight", {D, spec.n_ff}, mat);
    tensor(b + "ffn_up.weight", {D, spec.n_ff}, mat);
    tensor(b + "ffn_down.weight", {spec.n_ff, D}, mat);
  }
  tensor("output_norm.weight", {D}, DType::kF32);
  if (!spec.tied_embeddings) tensor("output.weight", {D, spec.n_vocab}, mat);
  for (GgufTensorInfo& t : m.tensors) {
    int64_t n = 1;
    for (int64_t d : t.dims) n *= d;
    t.bytes = static_cast<uint64_t>(DTypeBytes(t.type, n).value_or(0));
  }
  return m;
}

}  // namespace vibrant
