#include "passes/memory_check.h"

#include <algorithm>
#include <cstdint>
#include <iterator>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "ir/verifier.h"

namespace vibrant::passes {
namespace {

using ir::Device;
using ir::Graph;
using ir::Op;
using ir::OpKind;
using ir::Storage;
using ir::Value;
using ir::ValueId;

absl::string_view A(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// The registry's in-place rule for plain ops (ir/ops.h: InPlaceRule).
bool IsPureElementwise(OpKind k) {
  const ir::OpInfo& info = ir::GetOpInfo(k);
  return info.in_place == ir::InPlaceRule::kReuseDyingInput && info.elementwise;
}

}  // namespace

bool OpAllowsInPlace(const Graph& g, const Op& op, size_t input_index) {
  if (op.outputs.size() != 1 || input_index >= op.inputs.size()) return false;
  const Value& in = g.value(op.inputs[input_index]);
  const Value& out = g.value(op.outputs[0]);
  if (in.dtype != out.dtype || in.shape != out.shape) return false;
  if (IsPureElementwise(op.kind)) return true;
  if (op.kind != OpKind::kFused || op.body == nullptr) return false;
  const Graph& body = *op.body;
  if (body.ops().empty() || body.outputs().size() != 1) return false;
  for (const Op& b : body.ops()) {
    if (!IsPureElementwise(b.kind) || b.outputs.size() != 1) return false;
  }
  if (body.ops().back().outputs[0] != body.outputs()[0]) return false;
  // The body's input_index-th input (its undefined values in id order).
  ValueId body_in = -1;
  size_t seen = 0;
  for (ValueId v = 0; v < static_cast<ValueId>(body.values().size()); ++v) {
    if (body.value(v).producer >= 0) continue;
    if (seen++ == input_index) {
      body_in = v;
      break;
    }
  }
  if (body_in < 0 || body.value(body_in).shape != in.shape) return false;
  for (const Op& b : body.ops()) {
    for (ValueId x : b.inputs) {
      if (x == body_in && body.value(b.outputs[0]).shape != in.shape) return false;
    }
  }
  return true;
}

absl::Status CheckMemoryPlan(const Graph& g) {
  if (absl::Status s = ir::Verify(g); !s.ok()) return s;
  if (g.memory.empty()) return absl::FailedPreconditionError("memory plan: the graph has none");
  const ValueId nv = static_cast<ValueId>(g.values().size());
  const int nops = static_cast<int>(g.ops().size());
  auto label = [&](ValueId v) {
    return absl::StrCat("%", g.value(v).name, " (", A(DeviceName(g.value(v).device)), ")");
  };
  auto fail = [](const std::string& msg) { return absl::InvalidArgumentError("memory plan: " + msg); };

  // Producers and storage roots, recomputed here from the ops.
  std::vector<int> producer(nv, -1);
  for (int i = 0; i < nops; ++i) {
    for (ValueId o : g.ops()[i].outputs) producer[o] = i;
  }
  std::vector<ValueId> root(nv);
  for (ValueId v = 0; v < nv; ++v) {
    const Value& val = g.value(v);
    root[v] = val.storage == Storage::kKvCache && val.alias_of >= 0 ? val.alias_of : v;
  }
  // In op order, so that a view of a view resolves (ids need not follow it).
  for (const Op& op : g.ops()) {
    if (op.kind == OpKind::kReshape) root[op.outputs[0]] = root[op.inputs[0]];
  }
  auto in_arena = [&](ValueId r) {
    const Storage s = g.value(r).storage;
    return s == Storage::kInput || s == Storage::kActivation || s == Storage::kOutput;
  };

  std::vector<int64_t> bytes(nv, 0);
  std::map<Device, int64_t> kv;
  for (ValueId v = 0; v < nv; ++v) {
    const Value& val = g.value(v);
    absl::StatusOr<int64_t> b = DTypeBytes(val.dtype, ir::NumElements(val.shape, g.max_tokens));
    if (!b.ok()) return fail(absl::StrCat(label(v), ": ", b.status().message()));
    bytes[v] = *b;
    if (val.storage == Storage::kKvCache && root[v] == v) kv[val.device] += *b;
    if (root[v] != v) {
      const int64_t want = in_arena(root[v]) ? g.value(root[v]).arena_offset : -1;
      if (val.arena_offset != want) {
        return fail(absl::StrCat(label(v), " is a view of ", label(root[v]), " but has offset ", val.arena_offset,
                                 ", not ", want));
      }
      continue;
    }
    if (!in_arena(v)) {
      if (val.arena_offset != -1) {
        return fail(absl::StrCat(label(v), ": a ", A(StorageName(val.storage)), " has arena offset ",
                                 val.arena_offset));
      }
      continue;
    }
    auto mem = g.memory.find(val.device);
    if (mem == g.memory.end()) return fail(absl::StrCat(label(v), ": no arena for its device"));
    if (val.arena_offset < 0) return fail(absl::StrCat(label(v), ": no arena offset"));
    if (val.arena_offset % kArenaAlignment != 0) {
      return fail(absl::StrCat(label(v), ": offset ", val.arena_offset, " is not a multiple of ",
                               kArenaAlignment));
    }
    if (val.arena_offset > mem->second.arena_bytes || bytes[v] > mem->second.arena_bytes - val.arena_offset) {
      return fail(absl::StrCat(label(v), ": bytes [", val.arena_offset, ", ", val.arena_offset + bytes[v],
                               ") exceed the arena of ", mem->second.arena_bytes));
    }
  }
  for (const auto& [device, mem] : g.memory) {
    const int64_t want = kv.count(device) ? kv[device] : 0;
    if (mem.kv_bytes != want) {
      return fail(absl::StrCat(A(DeviceName(device)), " KV bytes ", mem.kv_bytes, ", the caches take ", want));
    }
  }
  for (const auto& [device, b] : kv) {
    if (!g.memory.count(device)) return fail(absl::StrCat("no entry for the ", A(DeviceName(device)), " KV caches"));
  }

  // Lifetimes of the arena roots: [first, last] in op indices.
  std::vector<ValueId> roots;
  std::vector<int> first(nv, 0), last(nv, 0);
  for (ValueId v = 0; v < nv; ++v) {
    if (root[v] != v || !in_arena(v)) continue;
    roots.push_back(v);
    first[v] = last[v] = producer[v];  // -1: a step input, live from the start
  }
  for (int i = 0; i < nops; ++i) {
    for (ValueId in : g.ops()[i].inputs) last[root[in]] = std::max(last[root[in]], i);
  }
  for (ValueId o : g.outputs()) last[root[o]] = nops;
  // The step's transfers (`copy` between a step input or graph output and
  // its device-side value, kernels "io") are not launches: the runtime
  // writes every input before the first launch and reads every output after
  // the last, so the device side of each is live for the whole step.
  for (int i = 0; i < nops; ++i) {
    const Op& op = g.ops()[i];
    if (op.kind != OpKind::kCopy) continue;
    const ValueId src = op.inputs[0], dst = op.outputs[0];
    if (g.value(src).storage == Storage::kInput && producer[src] < 0) first[root[dst]] = -1;
    if (g.value(dst).storage == Storage::kOutput) last[root[src]] = nops;
  }

  // b took a's storage in place at op first[b].
  auto in_place = [&](ValueId a, ValueId b) {
    const int i = first[b];
    if (i < 0 || last[a] != i || g.value(a).arena_offset != g.value(b).arena_offset) return false;
    const Op& op = g.ops()[i];
    if (op.outputs.size() != 1) return false;
    bool reads = false;
    for (size_t k = 0; k < op.inputs.size(); ++k) {
      if (root[op.inputs[k]] != a) continue;
      reads = true;
      if (!OpAllowsInPlace(g, op, k)) return false;
    }
    return reads;
  };
  // Pairs that overlap in time and bytes, found by a sweep over op indices
  // that keeps the live values of each device in a map by offset: O(n log n)
  // whatever the graph, so a hostile plan cannot make this check quadratic.
  // Live values never share a byte, except for an instant when one takes
  // another's storage in place (the same range), so an overlap with a newborn
  // is a value starting inside it or the nearest one starting before it.
  auto overlap = [&](ValueId a, ValueId b) {
    const int64_t a0 = g.value(a).arena_offset, a1 = a0 + bytes[a];
    const int64_t b0 = g.value(b).arena_offset, b1 = b0 + bytes[b];
    return fail(absl::StrCat(label(a), " [", a0, ", ", a1, ") and ", label(b), " [", b0, ", ", b1,
                             ") overlap while both are live (ops ", std::max(first[a], first[b]), "..",
                             std::min(last[a], last[b]), ")"));
  };
  std::vector<std::vector<ValueId>> born(nops + 2), dying(nops + 2);  // by op index + 1
  for (ValueId v : roots) {
    if (bytes[v] == 0) continue;
    born[first[v] + 1].push_back(v);
    dying[last[v] + 1].push_back(v);
  }
  std::map<Device, std::multimap<int64_t, ValueId>> live;  // offset -> value
  for (int t = 0; t < nops + 2; ++t) {
    for (ValueId b : born[t]) {
      std::multimap<int64_t, ValueId>& m = live[g.value(b).device];
      const int64_t b0 = g.value(b).arena_offset, b1 = b0 + bytes[b];
      auto conflicts = [&](ValueId a) {
        const int64_t a0 = g.value(a).arena_offset, a1 = a0 + bytes[a];
        return a0 < b1 && b0 < a1 && !in_place(a, b) && !in_place(b, a);
      };
      auto it = m.lower_bound(b0);
      if (it != m.begin()) {  // the values that start nearest before b
        auto p = std::prev(it);
        const int64_t start = p->first;
        for (;; --p) {
          if (p->first != start) break;
          if (conflicts(p->second)) return overlap(p->second, b);
          if (p == m.begin()) break;
        }
      }
      for (; it != m.end() && it->first < b1; ++it) {
        if (conflicts(it->second)) return overlap(it->second, b);
      }
      m.emplace(b0, b);
    }
    for (ValueId d : dying[t]) {
      std::multimap<int64_t, ValueId>& m = live[g.value(d).device];
      auto [lo, hi] = m.equal_range(g.value(d).arena_offset);
      for (auto it = lo; it != hi; ++it) {
        if (it->second == d) {
          m.erase(it);
          break;
        }
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace vibrant::passes
