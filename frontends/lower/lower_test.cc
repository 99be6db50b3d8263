#include "frontends/lower/lower.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "frontends/gguf/gguf.h"
#include "frontends/gguf/gguf_writer.h"
#include "ir/printer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "ir/graph.h"
#include "ir/ops.h"
#include "ir/verifier.h"

namespace vibrant {
namespace {

using ::testing::HasSubstr;
using ir::Graph;
using ir::kTokens;
using ir::OpKind;

// ---------------------------------------------------------------------------
// A minimal GGUF v3 writer for synthetic test files (zero-filled tensor data).

class TestGguf {
 public:
  void U32(const std::string& key, uint32_t v) { Kv(key, 4, Le(v, 4)); }
  void I32(const std::string& key, int32_t v) { Kv(key, 5, Le(static_cast<uint32_t>(v), 4)); }
  void F32(const std::string& key, float v) {
    uint32_t bits;
    std::memcpy(&bits, &v, 4);
    Kv(key, 6, Le(bits, 4));
  }
  void Str(const std::string& key, const std::string& v) { Kv(key, 8, StrBytes(v)); }
  void U32Array(const std::string& key, const std::vector<uint32_t>& v) {
    std::string b = Le(4, 4) + Le(v.size(), 8);
    for (uint32_t x : v) b += Le(x, 4);
    Kv(key, 9, b);
  }
  void Remove(const std::string& key) {
    for (size_t i = 0; i < kvs_.size(); ++i) {
      if (kvs_[i].first == key) {
        kvs_.erase(kvs_.begin() + i);
        return;
      }
    }
  }
  // ggml dims, innermost first.
  void Tensor(const std::string& name, std::vector<int64_t> dims, DType type = DType::kF32) {
    RemoveTensor(name);
    tensors_.push_back({name, std::move(dims), type});
  }
  void RemoveTensor(const std::string& name) {
    for (size_t i = 0; i < tensors_.size(); ++i) {
      if (tensors_[i].name == name) {
        tensors_.erase(tensors_.begin() + i);
        return;
      }
    }
  }
  bool HasTensor(const std::string& name) const {
    for (const auto& t : tensors_) {
      if (t.name == name) return true;
    }
    return false;
  }

  // Parses the bytes; the returned file refers to storage kept in this object.
  std::unique_ptr<GgufFile> Open(const std::string& name = "m.gguf") {
    bytes_ = Build();
    absl::StatusOr<std::unique_ptr<GgufFile>> f = GgufFile::FromBuffer(
        name, absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(bytes_.data()),
                                        bytes_.size()));
    EXPECT_TRUE(f.ok()) << f.status();
    return f.ok() ? std::move(*f) : nullptr;
  }

 private:
  struct T {
    std::string name;
    std::vector<int64_t> dims;
    DType type;
  };
  static std::string Le(uint64_t v, int n) {
    std::string s(n, '\0');
    for (int i = 0; i < n; ++i) s[i] = static_cast<char>((v >> (8 * i)) & 0xff);
    return s;
  }
  static std::string StrBytes(const std::string& s) { return Le(s.size(), 8) + s; }
  void Kv(const std::string& key, uint32_t type, const std::string& payload) {
    Remove(key);
    kvs_.push_back({key, Le(type, 4) + payload});
  }
  std::string Build() const {
    std::string out = "GGUF" + Le(3, 4) + Le(tensors_.size(), 8) + Le(kvs_.size(), 8);
    for (const auto& [k, v] : kvs_) out += StrBytes(k) + v;
    uint64_t offset = 0;
    std::vector<uint64_t> sizes;
    for (const T& t : tensors_) {
      int64_t n = 1;
      for (int64_t d : t.dims) n *= d;
      absl::StatusOr<int64_t> bytes = DTypeBytes(t.type, n);
      EXPECT_TRUE(bytes.ok()) << t.name << ": " << bytes.status();
      sizes.push_back(bytes.ok() ? *bytes : 0);
      out += StrBytes(t.name) + Le(t.dims.size(), 4);
      for (int64_t d : t.dims) out += Le(d, 8);
      out += Le(static_cast<uint32_t>(t.type), 4) + Le(offset, 8);
      offset += (sizes.back() + 31) / 32 * 32;
    }
    out.resize((out.size() + 31) / 32 * 32, '\0');
    for (uint64_t s : sizes) out.append((s + 31) / 32 * 32, '\0');
    return out;
  }
  std::vector<std::pair<std::string, std::string>> kvs_;
  std::vector<T> tensors_;
  std::string bytes_;
};

struct Spec {
  std::string arch = "llama";
  int64_t n_embd = 64, n_layer = 2, n_ff = 96, n_head = 4, n_head_kv = 2, n_vocab = 40;
  bool tied = false;
};

// A complete, consistent synthetic model of `spec`, all tensors f32.
void FillModel(const Spec& s, TestGguf& g) {
  const std::string a = s.arch;
  const int64_t hd = s.n_embd / s.n_head, kv = s.n_head_kv * hd;
  g.Str("general.architecture", a);
  g.U32(a + ".context_length", 256);
  g.U32(a + ".embedding_length", s.n_embd);
  g.U32(a + ".block_count", s.n_layer);
  g.U32(a + ".feed_forward_length", s.n_ff);
  g.U32(a + ".attention.head_count", s.n_head);
  g.U32(a + ".attention.head_count_kv", s.n_head_kv);
  g.F32(a + ".attention.layer_norm_rms_epsilon", 1e-5f);
  g.Tensor("token_embd.weight", {s.n_embd, s.n_vocab});
  g.Tensor("output_norm.weight", {s.n_embd});
  if (!s.tied) g.Tensor("output.weight", {s.n_embd, s.n_vocab});
  for (int64_t l = 0; l < s.n_layer; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    g.Tensor(b + "attn_norm.weight", {s.n_embd});
    g.Tensor(b + "attn_q.weight", {s.n_embd, s.n_embd});
    g.Tensor(b + "attn_k.weight", {s.n_embd, kv});
    g.Tensor(b + "attn_v.weight", {s.n_embd, kv});
    if (a == "qwen2") {
      g.Tensor(b + "attn_q.bias", {s.n_embd});
      g.Tensor(b + "attn_k.bias", {kv});
      g.Tensor(b + "attn_v.bias", {kv});
    }
    g.Tensor(b + "attn_output.weight", {s.n_embd, s.n_embd});
    g.Tensor(b + "ffn_norm.weight", {s.n_embd});
    g.Tensor(b + "ffn_gate.weight", {s.n_embd, s.n_ff});
    g.Tensor(b + "ffn_up.weight", {s.n_embd, s.n_ff});
    g.Tensor(b + "ffn_down.weight", {s.n_ff, s.n_embd});
  }
}

// ---------------------------------------------------------------------------
// Expectations, from the architecture.

std::map<OpKind, int> CountOps(const Graph& g) {
  std::map<OpKind, int> n;
  for (const ir::Op& op : g.ops()) ++n[op.kind];
  return n;
}

std::string CountsToString(const std::map<OpKind, int>& m) {
  std::string s;
  for (const auto& [k, n] : m) s += std::string(ir::OpName(k)) + "=" + std::to_string(n) + " ";
  return s;
}

// Per layer: attention norm and FFN norm (rms_norm + mul each); q, k, v,
// attention output, gate, up, down matmuls; reshapes of q, k, v to heads and
// of the attention result back; rope on q and k; two kv_stores; one
// attention; two residual adds; silu and the gate*up mul; qwen2 adds the
// q/k/v biases. Then embedding once, the output norm, last_row (unless
// all_logits) and the output matmul.
std::map<OpKind, int> ExpectedOps(int64_t n_layer, bool qkv_bias, bool all_logits) {
  std::map<OpKind, int> e;
  const int L = static_cast<int>(n_layer);
  e[OpKind::kEmbedding] = 1;
  e[OpKind::kRmsNorm] = 2 * L + 1;
  e[OpKind::kMul] = 3 * L + 1;
  e[OpKind::kMatMul] = 7 * L + 1;
  e[OpKind::kReshape] = 4 * L;
  e[OpKind::kRope] = 2 * L;
  e[OpKind::kKvStore] = 2 * L;
  e[OpKind::kAttention] = L;
  e[OpKind::kAdd] = (qkv_bias ? 5 : 2) * L;
  e[OpKind::kSilu] = L;
  if (!all_logits) e[OpKind::kLastRow] = 1;
  return e;
}

const ir::Op* FindProducer(const Graph& g, const std::string& value) {
  ir::ValueId id = g.FindValue(value);
  if (id < 0) return nullptr;
  for (const ir::Op& op : g.ops()) {
    for (ir::ValueId o : op.outputs) {
      if (o == id) return &op;
    }
  }
  return nullptr;
}

const ir::Value* FindVal(const Graph& g, const std::string& name) {
  ir::ValueId id = g.FindValue(name);
  return id < 0 ? nullptr : &g.value(id);
}

int64_t MetaInt(const Graph& g, const std::string& k) {
  auto it = g.meta.find(k);
  EXPECT_NE(it, g.meta.end()) << k;
  if (it == g.meta.end()) return -12345;
  const int64_t* v = std::get_if<int64_t>(&it->second);
  EXPECT_NE(v, nullptr) << k << " is not an int";
  return v ? *v : -12345;
}
double MetaFloat(const Graph& g, const std::string& k) {
  auto it = g.meta.find(k);
  EXPECT_NE(it, g.meta.end()) << k;
  if (it == g.meta.end()) return -12345;
  const double* v = std::get_if<double>(&it->second);
  EXPECT_NE(v, nullptr) << k << " is not a float";
  return v ? *v : -12345;
}

int64_t FileInt(const GgufFile& f, const std::string& key, int64_t dflt) {
  if (f.Find(key) == nullptr) return dflt;
  absl::StatusOr<int64_t> v = f.GetInt(key);
  EXPECT_TRUE(v.ok()) << v.status();
  return v.ok() ? *v : -1;
}
double FileFloat(const GgufFile& f, const std::string& key, double dflt) {
  if (f.Find(key) == nullptr) return dflt;
  absl::StatusOr<double> v = f.GetFloat(key);
  EXPECT_TRUE(v.ok()) << v.status();
  return v.ok() ? *v : -1;
}

// The op producing value `id`, or null for declarations.
const ir::Op* Producer(const Graph& g, ir::ValueId id) {
  for (const ir::Op& op : g.ops()) {
    for (ir::ValueId o : op.outputs) {
      if (o == id) return &op;
    }
  }
  return nullptr;
}

// For a value made by matmul(x, W) or add(matmul(x, W), bias): W's name.
std::string LinearWeight(const Graph& g, ir::ValueId id) {
  const ir::Op* op = Producer(g, id);
  if (op != nullptr && op->kind == OpKind::kAdd &&
      g.value(op->inputs[1]).storage == ir::Storage::kWeight) {
    op = Producer(g, op->inputs[0]);
  }
  if (op == nullptr || op->kind != OpKind::kMatMul) return "";
  return g.value(op->inputs[1]).name;
}

// For a value made by mul(rms_norm(x), w): w's name.
std::string NormWeight(const Graph& g, ir::ValueId id) {
  const ir::Op* op = Producer(g, id);
  if (op == nullptr || op->kind != OpKind::kMul) return "";
  const ir::Op* norm = Producer(g, op->inputs[0]);
  if (norm == nullptr || norm->kind != OpKind::kRmsNorm) return "";
  return g.value(op->inputs[1]).name;
}

// Checks the dataflow of the llama/qwen2 block, structurally (independent of
// intermediate value names): what feeds every matmul, rope, attention,
// silu and residual add.
void CheckWiring(const Graph& g, bool qwen2) {
  auto kind_of = [&](ir::ValueId id) {
    const ir::Op* p = Producer(g, id);
    return p ? std::string(ir::OpName(p->kind)) : "decl:" + g.value(id).name;
  };
  int residuals = 0, biases = 0;
  for (const ir::Op& op : g.ops()) {
    const std::string out = g.value(op.outputs[0]).name;
    SCOPED_TRACE(std::string(ir::OpName(op.kind)) + " " + out);
    if (op.kind == OpKind::kMatMul) {
      const std::string w = g.value(op.inputs[1]).name;
      const ir::ValueId x = op.inputs[0];
      const size_t dot = w.find('.', 4);
      const std::string blk = w.substr(0, dot + 1);  // "blk.3."
      const std::string role = w.substr(dot + 1);     // "attn_q.weight"
      if (role == "attn_q.weight" || role == "attn_k.weight" || role == "attn_v.weight") {
        EXPECT_EQ(NormWeight(g, x), blk + "attn_norm.weight");
      } else if (role == "ffn_gate.weight" || role == "ffn_up.weight") {
        EXPECT_EQ(NormWeight(g, x), blk + "ffn_norm.weight");
      } else if (role == "attn_output.weight") {
        const ir::Op* r = Producer(g, x);
        ASSERT_NE(r, nullptr);
        EXPECT_EQ(r->kind, OpKind::kReshape);
        EXPECT_EQ(kind_of(r->inputs[0]), "attention");
      } else if (role == "ffn_down.weight") {
        const ir::Op* m = Producer(g, x);
        ASSERT_NE(m, nullptr);
        ASSERT_EQ(m->kind, OpKind::kMul);
        const ir::Op* silu = Producer(g, m->inputs[0]);
        ASSERT_NE(silu, nullptr);
        EXPECT_EQ(silu->kind, OpKind::kSilu);
        EXPECT_EQ(LinearWeight(g, silu->inputs[0]), blk + "ffn_gate.weight");
        EXPECT_EQ(LinearWeight(g, m->inputs[1]), blk + "ffn_up.weight");
      } else {
        // The output projection: of the normed last row (or all rows).
        EXPECT_TRUE(w == "output.weight" || w == "token_embd.weight") << w;
        ir::ValueId y = x;
        if (const ir::Op* lr = Producer(g, y); lr && lr->kind == OpKind::kLastRow) {
          y = lr->inputs[0];
        }
        EXPECT_EQ(NormWeight(g, y), "output_norm.weight");
      }
    } else if (op.kind == OpKind::kRope) {
      const ir::Op* r = Producer(g, op.inputs[0]);
      ASSERT_NE(r, nullptr);
      EXPECT_EQ(r->kind, OpKind::kReshape);
      const std::string w = LinearWeight(g, r->inputs[0]);
      EXPECT_TRUE(w.ends_with("attn_q.weight") || w.ends_with("attn_k.weight")) << w;
      EXPECT_EQ(g.value(op.inputs[1]).name, "positions");
    } else if (op.kind == OpKind::kAttention) {
      const ir::Op* rq = Producer(g, op.inputs[0]);
      ASSERT_NE(rq, nullptr);
      ASSERT_EQ(rq->kind, OpKind::kRope);
      EXPECT_TRUE(LinearWeight(g, Producer(g, rq->inputs[0])->inputs[0])
                      .ends_with("attn_q.weight"));
      const ir::Op* sk = Producer(g, op.inputs[1]);
      const ir::Op* sv = Producer(g, op.inputs[2]);
      ASSERT_TRUE(sk && sv);
      ASSERT_EQ(sk->kind, OpKind::kKvStore);
      ASSERT_EQ(sv->kind, OpKind::kKvStore);
      EXPECT_EQ(kind_of(sk->inputs[0]), "rope");  // k is rotated before caching
      EXPECT_EQ(kind_of(sv->inputs[0]), "reshape");
      EXPECT_TRUE(LinearWeight(g, Producer(g, sv->inputs[0])->inputs[0])
                      .ends_with("attn_v.weight"));
      EXPECT_EQ(g.value(op.inputs[3]).name, "positions");
    } else if (op.kind == OpKind::kAdd) {
      if (g.value(op.inputs[1]).storage == ir::Storage::kWeight) {
        ++biases;
        EXPECT_TRUE(g.value(op.inputs[1]).name.ends_with(".bias"));
        continue;
      }
      // Residual: a block's output projection plus the block's input.
      ++residuals;
      const std::string w = LinearWeight(g, op.inputs[0]);
      EXPECT_TRUE(w.ends_with("attn_output.weight") || w.ends_with("ffn_down.weight")) << w;
      const std::string in = kind_of(op.inputs[1]);
      EXPECT_TRUE(in == "add" || in == "embedding") << in;
    }
  }
  EXPECT_EQ(biases, qwen2 ? 3 * (residuals / 2) : 0);
}

// Checks everything a lowered real file must satisfy, against the file's own
// metadata and tensor table.
void CheckModel(const GgufFile& f, const Graph& g, const LowerOptions& opts) {
  absl::Status verified = ir::Verify(g);
  EXPECT_TRUE(verified.ok()) << verified;

  const std::string arch = *f.Architecture();
  const bool qwen2 = arch == "qwen2";
  const int64_t n_layer = FileInt(f, arch + ".block_count", -1);
  const int64_t n_embd = FileInt(f, arch + ".embedding_length", -1);
  const int64_t n_head = FileInt(f, arch + ".attention.head_count", -1);
  const int64_t n_head_kv = FileInt(f, arch + ".attention.head_count_kv", n_head);
  const int64_t hd = n_embd / n_head;
  const int64_t ctx_train = FileInt(f, arch + ".context_length", -1);
  const GgufTensorInfo* embd = f.FindTensor("token_embd.weight");
  ASSERT_NE(embd, nullptr);
  const int64_t n_vocab = embd->dims[1];

  CheckWiring(g, qwen2);
  EXPECT_EQ(CountOps(g), ExpectedOps(n_layer, qwen2, opts.all_logits))
      << "got " << CountsToString(CountOps(g));

  // Meta, as lower.h lists it.
  EXPECT_EQ(std::get<std::string>(g.meta.at("arch")), arch);
  EXPECT_EQ(MetaInt(g, "n_layer"), n_layer);
  EXPECT_EQ(MetaInt(g, "n_embd"), n_embd);
  EXPECT_EQ(MetaInt(g, "n_head"), n_head);
  EXPECT_EQ(MetaInt(g, "n_head_kv"), n_head_kv);
  EXPECT_EQ(MetaInt(g, "head_dim"), hd);
  EXPECT_EQ(MetaInt(g, "n_ff"), FileInt(f, arch + ".feed_forward_length", -1));
  EXPECT_EQ(MetaInt(g, "n_vocab"), n_vocab);
  EXPECT_EQ(MetaInt(g, "n_ctx_train"), ctx_train);
  const int64_t n_ctx = opts.n_ctx ? opts.n_ctx : std::min<int64_t>(ctx_train, 4096);
  EXPECT_EQ(MetaInt(g, "n_ctx"), n_ctx);
  EXPECT_EQ(MetaInt(g, "rope_dim"), FileInt(f, arch + ".rope.dimension_count", hd));
  EXPECT_EQ(MetaInt(g, "rope_mode"), qwen2 ? 2 : 0);
  EXPECT_EQ(MetaFloat(g, "rope_freq_base"), FileFloat(f, arch + ".rope.freq_base", 10000.0));
  EXPECT_EQ(MetaFloat(g, "rope_freq_scale"), 1.0);
  EXPECT_EQ(MetaFloat(g, "rms_eps"),
            FileFloat(f, arch + ".attention.layer_norm_rms_epsilon", -1));
  EXPECT_EQ(MetaInt(g, "all_logits"), opts.all_logits ? 1 : 0);

  // Inputs, output, caches.
  const ir::Value* tokens = FindVal(g, "tokens");
  const ir::Value* positions = FindVal(g, "positions");
  ASSERT_NE(tokens, nullptr);
  ASSERT_NE(positions, nullptr);
  EXPECT_EQ(tokens->dtype, DType::kI32);
  EXPECT_EQ(tokens->shape, ir::Shape({kTokens}));
  EXPECT_EQ(tokens->storage, ir::Storage::kInput);
  EXPECT_EQ(positions->dtype, DType::kI32);
  EXPECT_EQ(positions->shape, ir::Shape({kTokens}));
  ASSERT_EQ(g.outputs().size(), 1u);
  const ir::Value& logits = g.value(g.outputs()[0]);
  EXPECT_EQ(logits.name, "logits");
  EXPECT_EQ(logits.dtype, DType::kF32);
  EXPECT_EQ(logits.shape, ir::Shape({opts.all_logits ? kTokens : 1, n_vocab}));
  for (int64_t l = 0; l < n_layer; ++l) {
    for (const char* kind : {"cache_k.", "cache_v."}) {
      const ir::Value* c = FindVal(g, kind + std::to_string(l));
      ASSERT_NE(c, nullptr) << kind << l;
      EXPECT_EQ(c->storage, ir::Storage::kKvCache);
      EXPECT_EQ(c->dtype, kind[6] == 'k' ? opts.cache_type_k : opts.cache_type_v);
      EXPECT_EQ(c->shape, ir::Shape({n_ctx, n_head_kv, hd}));
    }
  }

  // Every file tensor is a weight with the file's type, its dims reversed.
  int weights = 0;
  for (const ir::Value& v : g.values()) weights += v.storage == ir::Storage::kWeight;
  EXPECT_EQ(weights, static_cast<int>(f.tensors().size()));
  for (const GgufTensorInfo& t : f.tensors()) {
    const ir::Value* w = FindVal(g, t.name);
    ASSERT_NE(w, nullptr) << t.name;
    EXPECT_EQ(w->storage, ir::Storage::kWeight) << t.name;
    EXPECT_EQ(w->source, t.name);
    EXPECT_EQ(w->dtype, t.type) << t.name;
    EXPECT_EQ(w->shape, ir::Shape(t.dims.rbegin(), t.dims.rend())) << t.name;
  }

  // Tied or not: the output projection is output.weight when the file has it.
  const ir::Op* out = FindProducer(g, "logits");
  ASSERT_NE(out, nullptr);
  ASSERT_EQ(out->kind, OpKind::kMatMul);
  EXPECT_EQ(g.value(out->inputs[1]).name,
            f.FindTensor("output.weight") ? "output.weight" : "token_embd.weight");

  // Rope and attention attributes.
  for (const ir::Op& op : g.ops()) {
    if (op.kind == OpKind::kRope) {
      EXPECT_EQ(op.IntAttr("mode", -1), qwen2 ? 2 : 0);
      EXPECT_EQ(op.IntAttr("n_rot", -1), FileInt(f, arch + ".rope.dimension_count", hd));
      EXPECT_EQ(op.FloatAttr("freq_base", -1), FileFloat(f, arch + ".rope.freq_base", 1e4));
      EXPECT_EQ(op.FloatAttr("freq_scale", -1), 1.0);
      EXPECT_EQ(op.inputs.size(), 2u);
    }
    if (op.kind == OpKind::kAttention) {
      EXPECT_DOUBLE_EQ(op.FloatAttr("scale", -1), 1.0 / std::sqrt(static_cast<double>(hd)));
      // Reads the caches after this step's kv_store, which alias the caches
      // of the same layer ("attn.<l>" reads "cache_k.<l>" / "cache_v.<l>").
      const std::string layer = g.value(op.outputs[0]).name.substr(std::string("attn.").size());
      const char* caches[] = {"cache_k.", "cache_v."};
      for (int i = 0; i < 2; ++i) {
        const ir::Value& kv = g.value(op.inputs[1 + i]);
        const ir::Op* store = FindProducer(g, kv.name);
        ASSERT_NE(store, nullptr) << kv.name;
        EXPECT_EQ(store->kind, OpKind::kKvStore);
        EXPECT_EQ(store->inputs[1], g.FindValue(caches[i] + layer));
        EXPECT_EQ(kv.alias_of, g.FindValue(caches[i] + layer));
      }
    }
  }
}

std::string SharedModel(const std::string& name) {
  return std::string(VIBRANT_SOURCE_DIR) + "/../shared/models/" + name;
}

struct Loaded {
  std::unique_ptr<GgufFile> file;
  Graph graph;
};

// ---------------------------------------------------------------------------
// Real files.

TEST(LowerRealTest, Stories260K) {
  std::string path = std::string(VIBRANT_SOURCE_DIR) + "/tests/data/stories260K.gguf";
  if (!std::filesystem::exists(path)) path = SharedModel("stories260K.gguf");
  if (!std::filesystem::exists(path)) GTEST_SKIP() << "stories260K.gguf not found";
  absl::StatusOr<std::unique_ptr<GgufFile>> f = GgufFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  LowerOptions opts;
  absl::StatusOr<Graph> g = LowerGguf(**f, opts);
  ASSERT_TRUE(g.ok()) << g.status();
  CheckModel(**f, *g, opts);
  // Hand-computed for 5 layers, llama, last row only.
  std::map<OpKind, int> want = {
      {OpKind::kEmbedding, 1}, {OpKind::kRmsNorm, 11}, {OpKind::kMul, 16},
      {OpKind::kMatMul, 36},   {OpKind::kReshape, 20}, {OpKind::kRope, 10},
      {OpKind::kKvStore, 10},  {OpKind::kAttention, 5}, {OpKind::kAdd, 10},
      {OpKind::kSilu, 5},      {OpKind::kLastRow, 1}};
  EXPECT_EQ(CountOps(*g), want);
  EXPECT_EQ(g->ops().size(), 125u);
  EXPECT_EQ(MetaInt(*g, "n_ctx"), 2048);
  EXPECT_EQ(MetaInt(*g, "head_dim"), 8);
  EXPECT_EQ(MetaInt(*g, "rope_dim"), 8);
  EXPECT_EQ(g->max_tokens, 512);
  // stories260K has its own output.weight (not tied).
  EXPECT_EQ(g->value(FindProducer(*g, "logits")->inputs[1]).name, "output.weight");
}

TEST(LowerRealTest, TinyLlamaQuantizedAllLogits) {
  const std::string path = SharedModel("tiny-llama-q4_k_m.gguf");
  if (!std::filesystem::exists(path)) GTEST_SKIP() << path << " not found";
  absl::StatusOr<std::unique_ptr<GgufFile>> f = GgufFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  LowerOptions opts;
  opts.all_logits = true;
  opts.cache_type_k = DType::kF32;
  opts.cache_type_v = DType::kF32;
  opts.n_ctx = 300;
  opts.max_tokens = 64;
  absl::StatusOr<Graph> g = LowerGguf(**f, opts);
  ASSERT_TRUE(g.ok()) << g.status();
  CheckModel(**f, *g, opts);
  EXPECT_EQ(g->max_tokens, 64);
  // README: d_model 256, 4 heads of 64, 2 KV heads.
  const ir::Value* k = FindVal(*g, "blk.1.attn_k.weight");
  ASSERT_NE(k, nullptr);
  EXPECT_EQ(k->shape, ir::Shape({128, 256}));
  EXPECT_TRUE(IsQuantized(k->dtype));
  EXPECT_EQ(FindVal(*g, "q_heads.0")->shape, ir::Shape({kTokens, 4, 64}));
  EXPECT_EQ(FindVal(*g, "k_heads.0")->shape, ir::Shape({kTokens, 2, 64}));
}

TEST(LowerRealTest, TinyQwen2) {
  const std::string path = SharedModel("tiny-qwen2-q8_0.gguf");
  if (!std::filesystem::exists(path)) GTEST_SKIP() << path << " not found";
  absl::StatusOr<std::unique_ptr<GgufFile>> f = GgufFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  LowerOptions opts;
  absl::StatusOr<Graph> g = LowerGguf(**f, opts);
  ASSERT_TRUE(g.ok()) << g.status();
  CheckModel(**f, *g, opts);
  EXPECT_EQ(MetaFloat(*g, "rope_freq_base"), 1e6);
  // The q bias is a separate add after the matmul, before the reshape.
  const ir::Op* qb = FindProducer(*g, "q.0");
  ASSERT_NE(qb, nullptr);
  EXPECT_EQ(qb->kind, OpKind::kAdd);
  EXPECT_EQ(g->value(qb->inputs[1]).name, "blk.0.attn_q.bias");
  EXPECT_EQ(FindVal(*g, "q_heads.0")->shape, ir::Shape({kTokens, 4, 128}));
}

// The architectures of ../shared/next (hyperparameters from its
// ARCHITECTURES.md): what each adds to the llama block, checked on the graph.
absl::StatusOr<Graph> LowerNext(const std::string& name, std::unique_ptr<GgufFile>* keep) {
  const std::string path = std::string(VIBRANT_SOURCE_DIR) + "/../shared/next/models/" + name;
  if (!std::filesystem::exists(path)) return absl::NotFoundError(path);
  absl::StatusOr<std::unique_ptr<GgufFile>> f = GgufFile::Open(path);
  if (!f.ok()) return f.status();
  *keep = *std::move(f);
  LowerOptions opts;
  opts.all_logits = true;
  opts.max_tokens = 32;
  opts.n_ctx = 128;
  absl::StatusOr<Graph> g = LowerGguf(**keep, opts);
  if (g.ok()) EXPECT_TRUE(ir::Verify(*g).ok()) << ir::Verify(*g);
  return g;
}

#define LOWER_NEXT_OR_SKIP(var, name)                                             \
  std::unique_ptr<GgufFile> var##_file;                                           \
  absl::StatusOr<Graph> var = LowerNext(name, &var##_file);                       \
  if (var.status().code() == absl::StatusCode::kNotFound) GTEST_SKIP() << name;   \
  ASSERT_TRUE(var.ok()) << var.status()

TEST(LowerNextTest, Qwen3HeadNormsBeforeRope) {
  LOWER_NEXT_OR_SKIP(g, "tiny-qwen3-f16.gguf");
  // 4 heads of 128 (q width 512 != d_model 256), q and k normed per head.
  EXPECT_EQ(MetaInt(*g, "head_dim"), 128);
  EXPECT_EQ(FindVal(*g, "blk.0.attn_q.weight")->shape, ir::Shape({512, 256}));
  const ir::Op* qn = FindProducer(*g, "q_norm.0");
  ASSERT_NE(qn, nullptr);
  EXPECT_EQ(qn->kind, OpKind::kMul);
  EXPECT_EQ(g->value(qn->inputs[1]).name, "blk.0.attn_q_norm.weight");
  const ir::Op* rms = FindProducer(*g, "q_norm.0_rms");
  EXPECT_EQ(g->value(rms->inputs[0]).shape, ir::Shape({kTokens, 4, 128}));  // over head_dim
  EXPECT_EQ(g->value(FindProducer(*g, "q_rope.0")->inputs[0]).name, "q_norm.0");
  EXPECT_EQ(g->value(FindProducer(*g, "k_rope.1")->inputs[0]).name, "k_norm.1");
  EXPECT_EQ(MetaInt(*g, "rope_mode"), 2);
  EXPECT_DOUBLE_EQ(FindProducer(*g, "attn.0")->FloatAttr("scale"), 1.0 / std::sqrt(128.0));
}

TEST(LowerNextTest, Gemma3WindowsRopeBasesNormsAndGelu) {
  LOWER_NEXT_OR_SKIP(g, "tiny-gemma3-f16.gguf");
  // Embedding times sqrt(256) = 16.
  const ir::Op* sc = FindProducer(*g, "inp_scaled");
  ASSERT_NE(sc, nullptr);
  EXPECT_EQ(sc->FloatAttr("scale"), 16.0);
  // Pattern 2: layer 0 local (window 8, base 1e4), layer 1 global (base 1e6).
  EXPECT_EQ(FindProducer(*g, "attn.0")->IntAttr("window"), 8);
  EXPECT_EQ(FindProducer(*g, "attn.1")->attrs.count("window"), 0u);
  EXPECT_EQ(FindProducer(*g, "q_rope.0")->FloatAttr("freq_base"), 10000.0);
  EXPECT_EQ(FindProducer(*g, "k_rope.1")->FloatAttr("freq_base"), 1e6);
  // Four norms per layer plus q/k norms; gelu(gate) * up; tied output.
  for (const char* v : {"attn_norm.1", "attn_post_norm.1", "ffn_norm.1", "ffn_post_norm.1",
                        "q_norm.1", "k_norm.1"}) {
    EXPECT_NE(FindProducer(*g, v), nullptr) << v;
  }
  EXPECT_EQ(FindProducer(*g, "ffn_gelu.0")->kind, OpKind::kGelu);
  EXPECT_EQ(FindProducer(*g, "ffn_silu.0"), nullptr);
  EXPECT_EQ(g->value(FindProducer(*g, "l_out.0")->inputs[0]).name, "ffn_post_norm.0");
  EXPECT_EQ(g->value(FindProducer(*g, "logits")->inputs[1]).name, "token_embd.weight");
  EXPECT_DOUBLE_EQ(FindProducer(*g, "attn.1")->FloatAttr("scale"), 1.0 / std::sqrt(128.0));
}

TEST(LowerNextTest, Phi3SplitsFusedWeightsByViews) {
  LOWER_NEXT_OR_SKIP(g, "tiny-phi3-q4_k_m.gguf");
  // attn_qkv [512 x 256]: q rows 0-255, k 256-383, v 384-511; ffn_up
  // [1536 x 256]: gate rows 0-767, up 768-1535. Offsets in elements.
  struct View { const char* name; int64_t rows, offset; };
  for (const View& v : {View{"blk.1.attn_qkv.weight.q", 256, 0},
                        View{"blk.1.attn_qkv.weight.k", 128, 256 * 256},
                        View{"blk.1.attn_qkv.weight.v", 128, 384 * 256},
                        View{"blk.0.ffn_up.weight.gate", 768, 0},
                        View{"blk.0.ffn_up.weight.up", 768, 768 * 256}}) {
    const ir::Value* w = FindVal(*g, v.name);
    ASSERT_NE(w, nullptr) << v.name;
    EXPECT_EQ(w->shape, ir::Shape({v.rows, 256})) << v.name;
    EXPECT_EQ(w->source_offset, v.offset) << v.name;
    EXPECT_EQ(w->storage, ir::Storage::kWeight);
  }
  EXPECT_EQ(FindVal(*g, "blk.1.attn_qkv.weight.q")->source, "blk.1.attn_qkv.weight");
  EXPECT_EQ(FindVal(*g, "blk.1.attn_qkv.weight.q")->dtype, DType::kQ6_K);  // layer 1's mix
  EXPECT_EQ(FindVal(*g, "blk.1.attn_qkv.weight"), nullptr);  // no whole-tensor value
  EXPECT_EQ(g->value(FindProducer(*g, "ffn_silu.0")->inputs[0]).name, "ffn_gate.0");
}

TEST(LowerNextTest, Qwen3MoeRouterAndExperts) {
  LOWER_NEXT_OR_SKIP(g, "tiny-qwen3moe-q4_k_m.gguf");
  std::map<OpKind, int> n = CountOps(*g);
  EXPECT_EQ(n[OpKind::kMoeTopK], 2);
  EXPECT_EQ(n[OpKind::kMoeWeights], 2);
  EXPECT_EQ(n[OpKind::kMatMulId], 6);
  EXPECT_EQ(n[OpKind::kMoeSum], 2);
  EXPECT_EQ(FindProducer(*g, "ffn_moe_topk.0")->IntAttr("k"), 2);
  EXPECT_EQ(FindProducer(*g, "ffn_moe_weights.0")->IntAttr("norm"), 1);
  EXPECT_EQ(FindVal(*g, "ffn_moe_topk.0")->shape, ir::Shape({kTokens, 2}));
  // Stacked experts [E, N, K]; layer 1's down experts fell back to q8_0.
  EXPECT_EQ(FindVal(*g, "blk.0.ffn_gate_exps.weight")->shape, ir::Shape({4, 128, 256}));
  EXPECT_EQ(FindVal(*g, "blk.1.ffn_down_exps.weight")->shape, ir::Shape({4, 256, 128}));
  EXPECT_EQ(FindVal(*g, "blk.1.ffn_down_exps.weight")->dtype, DType::kQ8_0);
  EXPECT_EQ(FindVal(*g, "blk.0.ffn_down_exps.weight")->dtype, DType::kQ5_0);
  EXPECT_EQ(FindVal(*g, "blk.0.ffn_gate_inp.weight")->dtype, DType::kF32);
  EXPECT_EQ(FindVal(*g, "ffn_moe_down.0")->shape, ir::Shape({kTokens, 2, 256}));
  EXPECT_EQ(MetaInt(*g, "n_expert"), 4);
}

// ---------------------------------------------------------------------------
// Synthetic files.

absl::StatusOr<Graph> LowerSpec(TestGguf& t, std::unique_ptr<GgufFile>& keep,
                                const LowerOptions& opts = {}) {
  keep = t.Open();
  if (keep == nullptr) return absl::InternalError("test file did not parse");
  return LowerGguf(*keep, opts);
}

TEST(LowerSyntheticTest, TiedEmbeddings) {
  for (const char* arch : {"llama", "qwen2"}) {
    SCOPED_TRACE(arch);
    Spec s;
    s.arch = arch;
    s.tied = true;
    TestGguf t;
    FillModel(s, t);
    std::unique_ptr<GgufFile> f;
    absl::StatusOr<Graph> g = LowerSpec(t, f);
    ASSERT_TRUE(g.ok()) << g.status();
    CheckModel(*f, *g, LowerOptions());
    EXPECT_EQ(g->FindValue("output.weight"), -1);
    const ir::Op* out = FindProducer(*g, "logits");
    EXPECT_EQ(g->value(out->inputs[1]).name, "token_embd.weight");
    // The table is declared once and feeds both the embedding and the output.
    int uses = 0;
    for (const ir::Op& op : g->ops()) {
      for (ir::ValueId in : op.inputs) uses += in == g->FindValue("token_embd.weight");
    }
    EXPECT_EQ(uses, 2);
  }
}

TEST(LowerSyntheticTest, SmallCtxClampsMaxTokens) {
  TestGguf t;
  FillModel(Spec(), t);
  std::unique_ptr<GgufFile> f;
  LowerOptions opts;
  opts.n_ctx = 100;
  absl::StatusOr<Graph> g = LowerSpec(t, f, opts);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(g->max_tokens, 100);
  EXPECT_EQ(FindVal(*g, "cache_v.1")->shape, ir::Shape({100, 2, 16}));
  EXPECT_EQ(FindVal(*g, "cache_v.1")->dtype, DType::kF16);
}

TEST(LowerSyntheticTest, UnsupportedArchitecture) {
  Spec s;
  s.arch = "mamba";
  TestGguf t;
  FillModel(s, t);
  std::unique_ptr<GgufFile> f;
  absl::StatusOr<Graph> g = LowerSpec(t, f);
  ASSERT_FALSE(g.ok());
  EXPECT_EQ(g.status().message(), "m.gguf: unsupported architecture 'mamba' (supported: llama, qwen2, qwen3, qwen3moe, gemma3, phi3)");
}

TEST(LowerSyntheticTest, MissingTensor) {
  TestGguf t;
  FillModel(Spec(), t);
  t.RemoveTensor("blk.1.ffn_up.weight");
  std::unique_ptr<GgufFile> f;
  absl::StatusOr<Graph> g = LowerSpec(t, f);
  ASSERT_FALSE(g.ok());
  EXPECT_THAT(g.status().message(), HasSubstr("m.gguf: tensor blk.1.ffn_up.weight: missing"));
}

TEST(LowerSyntheticTest, Qwen2RequiresQkvBias) {
  Spec s;
  s.arch = "qwen2";
  TestGguf t;
  FillModel(s, t);
  t.RemoveTensor("blk.0.attn_k.bias");
  std::unique_ptr<GgufFile> f;
  absl::StatusOr<Graph> g = LowerSpec(t, f);
  ASSERT_FALSE(g.ok());
  EXPECT_THAT(g.status().message(), HasSubstr("m.gguf: tensor blk.0.attn_k.bias: missing"));
}

TEST(LowerSyntheticTest, WrongTensorShape) {
  TestGguf t;
  FillModel(Spec(), t);
  t.Tensor("blk.0.attn_q.weight", {64, 32});
  std::unique_ptr<GgufFile> f;
  absl::StatusOr<Graph> g = LowerSpec(t, f);
  ASSERT_FALSE(g.ok());
  EXPECT_EQ(g.status().message(),
            "m.gguf: tensor blk.0.attn_q.weight: expected shape [64, 64], file has [64, 32]");
}

TEST(LowerSyntheticTest, WrongNormShapeAndType) {
  {
    TestGguf t;
    FillModel(Spec(), t);
    t.Tensor("output_norm.weight", {64, 1});
    std::unique_ptr<GgufFile> f;
    absl::StatusOr<Graph> g = LowerSpec(t, f);
    ASSERT_FALSE(g.ok());
    EXPECT_THAT(g.status().message(),
                HasSubstr("output_norm.weight: expected shape [64], file has [64, 1]"));
  }
  {
    TestGguf t;
    FillModel(Spec(), t);
    t.Tensor("blk.1.ffn_norm.weight", {64}, DType::kF16);
    std::unique_ptr<GgufFile> f;
    absl::StatusOr<Graph> g = LowerSpec(t, f);
    ASSERT_FALSE(g.ok());
    EXPECT_THAT(g.status().message(),
                HasSubstr("blk.1.ffn_norm.weight: expected type f32, file has f16"));
  }
}

TEST(LowerSyntheticTest, IntegerWeightMatrixIsAnError) {
  TestGguf t;
  FillModel(Spec(), t);
  t.Tensor("blk.1.attn_v.weight", {64, 32}, DType::kI32);
  std::unique_ptr<GgufFile> f;
  absl::StatusOr<Graph> g = LowerSpec(t, f);
  ASSERT_FALSE(g.ok());
  EXPECT_THAT(g.status().message(),
              HasSubstr("m.gguf: tensor blk.1.attn_v.weight: type i32 is not supported"));
}

TEST(LowerSyntheticTest, UnsupportedQuantTypeIsANamedError) {
  Spec s;
  s.n_embd = 256;
  TestGguf t;
  FillModel(s, t);
  t.Tensor("blk.1.ffn_up.weight", {256, 96}, DType::kIQ2_XXS);
  std::unique_ptr<GgufFile> f;
  absl::StatusOr<Graph> g = LowerSpec(t, f);
  ASSERT_FALSE(g.ok());
  EXPECT_EQ(g.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(g.status().message(),
              HasSubstr("m.gguf: tensor blk.1.ffn_up.weight: tensor type iq2_xxs (16) is not "
                        "supported (supported: f32, f16, q4_0"));
}

TEST(LowerSyntheticTest, IQ4WeightsLower) {
  Spec s;
  s.n_embd = 256;
  TestGguf t;
  FillModel(s, t);
  t.Tensor("blk.0.attn_q.weight", {256, 256}, DType::kIQ4_XS);
  t.Tensor("blk.1.ffn_gate.weight", {256, 96}, DType::kIQ4_NL);
  std::unique_ptr<GgufFile> f;
  absl::StatusOr<Graph> g = LowerSpec(t, f);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(FindVal(*g, "blk.0.attn_q.weight")->dtype, DType::kIQ4_XS);
  EXPECT_EQ(FindVal(*g, "blk.1.ffn_gate.weight")->dtype, DType::kIQ4_NL);
}

// gemma3 as converted files state it (no pattern or local-base keys): llama.cpp's
// defaults give five local layers then a global one; the linear rope scaling
// (Gemma 3 4B: factor 8) applies to the global layers only.
TEST(LowerSyntheticTest, Gemma3DefaultPatternAndGlobalRopeScaling) {
  Spec sp;
  sp.arch = "gemma3";
  sp.n_layer = 7;
  sp.tied = true;
  TestGguf t;
  FillModel(sp, t);
  t.U32("gemma3.attention.sliding_window", 512);
  t.F32("gemma3.rope.freq_base", 1e6f);
  t.Str("gemma3.rope.scaling.type", "linear");
  t.F32("gemma3.rope.scaling.factor", 8.0f);
  for (int l = 0; l < sp.n_layer; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    t.Tensor(b + "attn_q_norm.weight", {16});
    t.Tensor(b + "attn_k_norm.weight", {16});
    t.Tensor(b + "post_attention_norm.weight", {64});
    t.Tensor(b + "post_ffw_norm.weight", {64});
  }
  std::unique_ptr<GgufFile> f;
  absl::StatusOr<Graph> g = LowerSpec(t, f);
  ASSERT_TRUE(g.ok()) << g.status();
  for (int l = 0; l < sp.n_layer; ++l) {
    const bool global = l == 5;  // l % 6 == 5
    const ir::Op* rope = FindProducer(*g, "q_rope." + std::to_string(l));
    const ir::Op* attn = FindProducer(*g, "attn." + std::to_string(l));
    EXPECT_EQ(rope->FloatAttr("freq_base"), global ? 1e6 : 10000.0) << l;
    EXPECT_EQ(rope->FloatAttr("freq_scale"), global ? 0.125 : 1.0) << l;
    EXPECT_EQ(attn->IntAttr("window", 0), global ? 0 : 512) << l;
  }
  // Missing sliding_window is a named error.
  TestGguf t2;
  FillModel(sp, t2);
  std::unique_ptr<GgufFile> f2;
  absl::StatusOr<Graph> g2 = LowerSpec(t2, f2);
  ASSERT_FALSE(g2.ok());
  EXPECT_THAT(g2.status().message(), HasSubstr("metadata gemma3.attention.sliding_window: missing"));
}

TEST(LowerSyntheticTest, UnusedTensorIsAnError) {
  TestGguf t;
  FillModel(Spec(), t);
  t.Tensor("blk.0.ffn_gate_inp.weight", {64, 8});
  std::unique_ptr<GgufFile> f;
  absl::StatusOr<Graph> g = LowerSpec(t, f);
  ASSERT_FALSE(g.ok());
  EXPECT_THAT(g.status().message(), HasSubstr("m.gguf: tensor blk.0.ffn_gate_inp.weight"));
}

TEST(LowerSyntheticTest, MetadataErrorsNameTheKey) {
  struct Case {
    std::function<void(TestGguf&)> edit;
    std::string want;
  };
  std::vector<Case> cases = {
      {[](TestGguf& t) { t.Remove("llama.block_count"); }, "llama.block_count: missing"},
      {[](TestGguf& t) { t.U32("llama.embedding_length", 0); }, "llama.embedding_length: 0"},
      {[](TestGguf& t) { t.U32("llama.attention.head_count_kv", 3); },
       "llama.attention.head_count_kv: 3 does not divide"},
      {[](TestGguf& t) {
         t.U32("llama.attention.head_count", 5);
         t.U32("llama.attention.head_count_kv", 5);
       },
       "llama.embedding_length: 64 is not divisible"},
      {[](TestGguf& t) { t.U32("llama.rope.dimension_count", 17); },
       "llama.rope.dimension_count: 17"},
      {[](TestGguf& t) { t.Str("llama.rope.scaling.type", "yarn"); },
       "llama.rope.scaling.type: 'yarn' rope scaling is not supported"},
      {[](TestGguf& t) { t.F32("llama.rope.freq_base", -1.f); }, "llama.rope.freq_base: -1"},
      {[](TestGguf& t) { t.Str("llama.attention.layer_norm_rms_epsilon", "x"); },
       "llama.attention.layer_norm_rms_epsilon"},
      {[](TestGguf& t) { t.U32Array("llama.feed_forward_length", {96, 128}); },
       "llama.feed_forward_length: per-layer values differ"},
      {[](TestGguf& t) { t.U32("llama.expert_count", 8); }, "llama.expert_count: 8"},
      {[](TestGguf& t) { t.Remove("general.architecture"); }, "general.architecture: missing"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.want);
    TestGguf t;
    FillModel(Spec(), t);
    c.edit(t);
    std::unique_ptr<GgufFile> f;
    absl::StatusOr<Graph> g = LowerSpec(t, f);
    ASSERT_FALSE(g.ok());
    EXPECT_THAT(g.status().message(), HasSubstr("m.gguf: metadata " + c.want));
  }
}

TEST(LowerSyntheticTest, UniformPerLayerArrayIsAccepted) {
  TestGguf t;
  FillModel(Spec(), t);
  t.U32Array("llama.feed_forward_length", {96, 96});
  std::unique_ptr<GgufFile> f;
  absl::StatusOr<Graph> g = LowerSpec(t, f);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(MetaInt(*g, "n_ff"), 96);
}

TEST(LowerSyntheticTest, RopeOptions) {
  TestGguf t;
  FillModel(Spec(), t);  // head_dim 16
  t.U32("llama.rope.dimension_count", 8);
  t.F32("llama.rope.freq_base", 500000.f);
  t.Str("llama.rope.scaling.type", "linear");
  t.F32("llama.rope.scaling.factor", 4.f);
  t.Tensor("rope_freqs.weight", {4});
  t.U32("llama.attention.key_length", 16);
  t.U32("llama.attention.value_length", 16);
  std::unique_ptr<GgufFile> f;
  absl::StatusOr<Graph> g = LowerSpec(t, f);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(MetaFloat(*g, "rope_freq_scale"), 0.25);
  EXPECT_EQ(MetaFloat(*g, "rope_freq_base"), 500000.0);
  EXPECT_EQ(MetaInt(*g, "rope_dim"), 8);
  int ropes = 0;
  for (const ir::Op& op : g->ops()) {
    if (op.kind != OpKind::kRope) continue;
    ++ropes;
    EXPECT_EQ(op.IntAttr("n_rot", -1), 8);
    EXPECT_EQ(op.FloatAttr("freq_scale", -1), 0.25);
    ASSERT_EQ(op.inputs.size(), 3u);
    EXPECT_EQ(g->value(op.inputs[2]).name, "rope_freqs.weight");
  }
  EXPECT_EQ(ropes, 4);

  // Wrong rope_freqs length.
  t.Tensor("rope_freqs.weight", {8});
  absl::StatusOr<Graph> bad = LowerSpec(t, f);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(),
              HasSubstr("rope_freqs.weight: expected shape [4], file has [8]"));
}

TEST(LowerSyntheticTest, ExplicitHeadDim) {
  // key_length decouples the head size from n_embd / n_head.
  Spec s;
  TestGguf t;
  FillModel(s, t);
  t.U32("llama.attention.key_length", 32);
  t.U32("llama.attention.value_length", 32);
  for (int l = 0; l < 2; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    t.Tensor(b + "attn_q.weight", {64, 4 * 32});
    t.Tensor(b + "attn_k.weight", {64, 2 * 32});
    t.Tensor(b + "attn_v.weight", {64, 2 * 32});
    t.Tensor(b + "attn_output.weight", {4 * 32, 64});
  }
  std::unique_ptr<GgufFile> f;
  absl::StatusOr<Graph> g = LowerSpec(t, f);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(MetaInt(*g, "head_dim"), 32);
  EXPECT_EQ(FindVal(*g, "attn_flat.0")->shape, ir::Shape({kTokens, 128}));
  EXPECT_EQ(FindVal(*g, "cache_k.0")->shape, ir::Shape({256, 2, 32}));  // context_length 256
}

// llama.cpp's --cache-type-k q8_0 --cache-type-v f16: the two caches of a
// layer get their own types, and the graph verifies.
TEST(LowerSyntheticTest, Q8_0KvCache) {
  TestGguf t;
  Spec s;
  s.n_embd = 128;  // head_dim 32
  FillModel(s, t);
  std::unique_ptr<GgufFile> f;
  LowerOptions opts;
  opts.cache_type_k = DType::kQ8_0;
  absl::StatusOr<Graph> g = LowerSpec(t, f, opts);
  ASSERT_TRUE(g.ok()) << g.status();
  for (int l = 0; l < 2; ++l) {
    EXPECT_EQ(FindVal(*g, "cache_k." + std::to_string(l))->dtype, DType::kQ8_0);
    EXPECT_EQ(FindVal(*g, "cache_v." + std::to_string(l))->dtype, DType::kF16);
  }
  EXPECT_TRUE(ir::Verify(*g).ok()) << ir::Verify(*g);
}

TEST(LowerSyntheticTest, BadOptions) {
  TestGguf t;
  FillModel(Spec(), t);
  std::unique_ptr<GgufFile> f;
  LowerOptions opts;
  opts.cache_type_v = DType::kQ4_0;
  absl::StatusOr<Graph> g = LowerSpec(t, f, opts);
  ASSERT_FALSE(g.ok());
  EXPECT_THAT(g.status().message(),
              HasSubstr("LowerOptions.cache_type_v q4_0 is not supported (supported: f16, f32, q8_0)"));
  opts = LowerOptions();
  opts.cache_type_k = DType::kQ8_0;  // Spec(): head_dim 64 / 4 = 16
  g = LowerSpec(t, f, opts);
  ASSERT_FALSE(g.ok());
  EXPECT_THAT(g.status().message(),
              HasSubstr("LowerOptions.cache_type_k q8_0 needs a head_dim that is a multiple of 32; "
                        "this model's is 16"));
  opts = LowerOptions();
  opts.max_tokens = 0;
  g = LowerSpec(t, f, opts);
  ASSERT_FALSE(g.ok());
  EXPECT_THAT(g.status().message(), HasSubstr("max_tokens"));
}

// Shapes alone lower to the graph that a GGUF file with the same metadata
// and tensors gives (the file written from the same spec, zero weights).
TEST(LowerShapesTest, SameGraphAsTheFile) {
  for (const char* arch : {"llama", "qwen2"}) {
    TransformerSpec spec;
    spec.arch = arch;
    spec.n_layer = 2;
    spec.n_embd = 64;
    spec.n_head = 4;
    spec.n_head_kv = 2;
    spec.n_ff = 96;
    spec.n_vocab = 40;
    spec.qkv_bias = spec.arch == "qwen2";
    spec.tied_embeddings = spec.arch == "qwen2";
    spec.rope_freq_base = 1e6;
    spec.rms_eps = 1e-6;
    const ModelShapes shapes = ShapesFromSpec(spec);
    GgufWriter w;
    for (const auto& [key, value] : shapes.metadata) w.AddMetadata(key, value);
    for (const GgufTensorInfo& t : shapes.tensors) {
      w.AddTensor(t.name, t.dims, t.type, [](absl::Span<uint8_t>) { return absl::OkStatus(); });
    }
    absl::StatusOr<std::string> bytes = w.Serialize();
    ASSERT_TRUE(bytes.ok()) << bytes.status();
    auto file = GgufFile::FromBuffer(
        "m.gguf", absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(bytes->data()), bytes->size()));
    ASSERT_TRUE(file.ok()) << file.status();
    absl::StatusOr<Graph> from_file = LowerGguf(**file, LowerOptions());
    absl::StatusOr<Graph> from_shapes = LowerShapes(shapes, LowerOptions());
    ASSERT_TRUE(from_file.ok()) << from_file.status();
    ASSERT_TRUE(from_shapes.ok()) << from_shapes.status();
    EXPECT_EQ(ir::PrintGraph(*from_shapes), ir::PrintGraph(*from_file)) << arch;
    EXPECT_EQ(MetaInt(*from_shapes, "n_layer"), 2);
    // Hand-counted: 2 inputs, token_embd, per layer 7 matrices + 2 norms
    // (+ 3 biases for qwen2), output_norm (+ output.weight for llama).
    int weights = 0;
    for (const ir::Value& v : from_shapes->values()) weights += v.storage == ir::Storage::kWeight;
    EXPECT_EQ(weights, spec.arch == "qwen2" ? 1 + 2 * 12 + 1 : 1 + 2 * 9 + 2) << arch;
  }
}

TEST(LowerShapesTest, ErrorsNameTheModel) {
  TransformerSpec spec;
  spec.name = "qwen-shapes";
  spec.arch = "qwen2";  // without qkv_bias: the required biases are missing
  absl::StatusOr<Graph> g = LowerShapes(ShapesFromSpec(spec), LowerOptions());
  ASSERT_FALSE(g.ok());
  EXPECT_THAT(g.status().message(), HasSubstr("qwen-shapes: tensor blk.0.attn_q.bias: missing"));
}

}  // namespace
}  // namespace vibrant
