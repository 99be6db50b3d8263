#include "ir/graph.h"

#include <string>
#include <utility>

#include "absl/strings/str_cat.h"

namespace vibrant::ir {

std::string ShapeToString(const Shape& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) {
    if (i > 0) out += ", ";
    if (s[i] == kTokens) {
      out += "T";
    } else {
      absl::StrAppend(&out, s[i]);
    }
  }
  out += "]";
  return out;
}

int64_t NumElements(const Shape& s, int64_t tokens) {
  int64_t n = 1;
  for (int64_t d : s) {
    const int64_t dim = d == kTokens ? tokens : d;
    if (dim < 0 || __builtin_mul_overflow(n, dim, &n)) return -1;
  }
  return n;
}

std::string_view StorageName(Storage s) {
  switch (s) {
    case Storage::kActivation: return "activation";
    case Storage::kWeight: return "weight";
    case Storage::kKvCache: return "kv";
    case Storage::kInput: return "input";
    case Storage::kOutput: return "output";
  }
  return "invalid";
}

std::string_view DeviceName(Device d) {
  switch (d) {
    case Device::kUnassigned: return "unassigned";
    case Device::kCpu: return "cpu";
    case Device::kCuda: return "cuda";
  }
  return "invalid";
}

int64_t Op::IntAttr(const std::string& key, int64_t dflt) const {
  auto it = attrs.find(key);
  if (it == attrs.end()) return dflt;
  if (const int64_t* i = std::get_if<int64_t>(&it->second)) return *i;
  return dflt;
}

double Op::FloatAttr(const std::string& key, double dflt) const {
  auto it = attrs.find(key);
  if (it == attrs.end()) return dflt;
  if (const double* d = std::get_if<double>(&it->second)) return *d;
  if (const int64_t* i = std::get_if<int64_t>(&it->second)) return static_cast<double>(*i);
  return dflt;
}

std::string Op::StringAttr(const std::string& key, const std::string& dflt) const {
  auto it = attrs.find(key);
  if (it == attrs.end()) return dflt;
  if (const std::string* s = std::get_if<std::string>(&it->second)) return *s;
  return dflt;
}

int64_t TpRanks(const Graph& g) {
  auto it = g.meta.find("tp");
  if (it == g.meta.end()) return 1;
  const int64_t* n = std::get_if<int64_t>(&it->second);
  return n == nullptr ? 0 : *n;
}

ValueId Graph::AddValue(Value v) {
  const ValueId id = static_cast<ValueId>(values_.size());
  by_name_.emplace(v.name, id);  // the first value of a name wins
  values_.push_back(std::move(v));
  return id;
}

ValueId Graph::AddInput(std::string name, DType dtype, Shape shape) {
  Value v;
  v.name = std::move(name);
  v.dtype = dtype;
  v.shape = std::move(shape);
  v.storage = Storage::kInput;
  return AddValue(std::move(v));
}

ValueId Graph::AddWeight(std::string name, DType dtype, Shape shape, std::string source,
                         int64_t source_offset) {
  Value v;
  v.name = std::move(name);
  v.dtype = dtype;
  v.shape = std::move(shape);
  v.storage = Storage::kWeight;
  v.source = std::move(source);
  v.source_offset = source_offset;
  return AddValue(std::move(v));
}

ValueId Graph::AddKvCache(std::string name, DType dtype, Shape shape) {
  Value v;
  v.name = std::move(name);
  v.dtype = dtype;
  v.shape = std::move(shape);
  v.storage = Storage::kKvCache;
  return AddValue(std::move(v));
}

absl::StatusOr<ValueId> Graph::AddOp(OpKind kind, std::vector<ValueId> inputs, std::string out_name,
                                     Attrs attrs) {
  absl::StatusOr<Value> out = InferOpOutput(*this, kind, inputs, attrs, out_name);
  if (!out.ok()) return out.status();
  out->producer = static_cast<OpId>(ops_.size());
  const ValueId id = AddValue(*std::move(out));
  Op op;
  op.kind = kind;
  op.inputs = std::move(inputs);
  op.outputs = {id};
  op.attrs = std::move(attrs);
  ops_.push_back(std::move(op));
  return id;
}

absl::StatusOr<std::vector<ValueId>> Graph::AddMultiOp(OpKind kind, std::vector<ValueId> inputs,
                                                       std::vector<std::string> out_names,
                                                       Attrs attrs) {
  absl::StatusOr<std::vector<Value>> outs = InferOpOutputs(*this, kind, inputs, attrs, out_names);
  if (!outs.ok()) return outs.status();
  Op op;
  op.kind = kind;
  op.inputs = std::move(inputs);
  op.attrs = std::move(attrs);
  std::vector<ValueId> ids;
  for (Value& v : *outs) {
    v.producer = static_cast<OpId>(ops_.size());
    ids.push_back(AddValue(std::move(v)));
  }
  op.outputs = ids;
  ops_.push_back(std::move(op));
  return ids;
}

OpId Graph::AddRawOp(Op op) {
  const OpId id = static_cast<OpId>(ops_.size());
  for (ValueId v : op.outputs) {
    if (v >= 0 && v < static_cast<ValueId>(values_.size())) values_[v].producer = id;
  }
  ops_.push_back(std::move(op));
  return id;
}

void Graph::MarkOutput(ValueId v) {
  outputs_.push_back(v);
  if (v >= 0 && v < static_cast<ValueId>(values_.size()) && values_[v].storage == Storage::kActivation) {
    values_[v].storage = Storage::kOutput;
  }
}

ValueId Graph::FindValue(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? -1 : it->second;
}

void Graph::Reindex() {
  by_name_.clear();
  for (size_t i = 0; i < values_.size(); ++i) {
    values_[i].producer = -1;
    by_name_.emplace(values_[i].name, static_cast<ValueId>(i));
  }
  for (size_t o = 0; o < ops_.size(); ++o) {
    for (ValueId v : ops_[o].outputs) {
      if (v >= 0 && v < static_cast<ValueId>(values_.size())) values_[v].producer = static_cast<OpId>(o);
    }
  }
}

absl::StatusOr<ValueId> FindLogitsOutput(const Graph& g) {
  ValueId logits = -1;
  for (ValueId o : g.outputs()) {
    if (g.value(o).name == "logits") logits = o;
  }
  if (logits < 0 && g.outputs().size() == 1) logits = g.outputs()[0];
  if (logits < 0) return absl::InvalidArgumentError("graph has no output 'logits'");
  if (g.value(logits).dtype != DType::kF32) {
    return absl::InvalidArgumentError("output 'logits' must be f32");
  }
  return logits;
}

}  // namespace vibrant::ir
