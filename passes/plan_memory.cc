#include "passes/plan_memory.h"

#include <algorithm>
#include <cstdint>
#include <limits>
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

int64_t AlignUp(int64_t n) { return (n + kArenaAlignment - 1) / kArenaAlignment * kArenaAlignment; }

// A run of arena bytes that one value, or a chain of values each written in
// place over the previous one, occupies during [first, last].
struct Slot {
  int64_t size = 0;
  int first = 0, last = 0;
  Device device = Device::kUnassigned;
  int64_t offset = -1;
};

// Best-fit greedy by size over the slots of one device; returns the arena size.
int64_t PlaceSlots(std::vector<Slot>& slots, const std::vector<int>& ids) {
  std::vector<int> order = ids;
  std::sort(order.begin(), order.end(), [&](int a, int b) {
    if (slots[a].size != slots[b].size) return slots[a].size > slots[b].size;
    if (slots[a].first != slots[b].first) return slots[a].first < slots[b].first;
    return a < b;
  });
  std::vector<int> placed;
  int64_t arena = 0;
  std::vector<int> live;
  for (int s : order) {
    Slot& slot = slots[s];
    live.clear();
    for (int p : placed) {
      if (slots[p].first <= slot.last && slot.first <= slots[p].last) live.push_back(p);
    }
    std::sort(live.begin(), live.end(), [&](int a, int b) { return slots[a].offset < slots[b].offset; });
    int64_t best = -1, best_waste = std::numeric_limits<int64_t>::max();
    int64_t cursor = 0;
    for (int p : live) {
      const int64_t gap = slots[p].offset - cursor;
      if (gap >= slot.size && gap - slot.size < best_waste) {
        best = cursor;
        best_waste = gap - slot.size;
      }
      cursor = std::max(cursor, slots[p].offset + slots[p].size);
    }
    slot.offset = best >= 0 ? best : cursor;
    arena = std::max(arena, slot.offset + slot.size);
    placed.push_back(s);
  }
  return arena;
}

}  // namespace

void ClearMemoryPlan(Graph& g) {
  g.memory.clear();
  for (Value& v : g.mutable_values()) v.arena_offset = -1;
}

absl::StatusOr<MemoryPlanStats> PlanGraphMemory(Graph& g) {
  if (absl::Status s = ir::Verify(g); !s.ok()) return s;
  ClearMemoryPlan(g);
  const ValueId nv = static_cast<ValueId>(g.values().size());
  const int nops = static_cast<int>(g.ops().size());

  // Storage roots (views share their root's bytes), resolved in op order.
  std::vector<ValueId> root(nv);
  for (ValueId v = 0; v < nv; ++v) {
    const Value& val = g.value(v);
    root[v] = val.storage == Storage::kKvCache && val.alias_of >= 0 ? val.alias_of : v;
  }
  for (const Op& op : g.ops()) {
    if (op.kind == OpKind::kReshape) root[op.outputs[0]] = root[op.inputs[0]];
  }
  auto in_arena = [&](ValueId r) {
    const Storage s = g.value(r).storage;
    return root[r] == r && (s == Storage::kInput || s == Storage::kActivation || s == Storage::kOutput);
  };

  MemoryPlanStats stats;
  std::vector<int64_t> bytes(nv, 0);
  for (ValueId v = 0; v < nv; ++v) {
    const Value& val = g.value(v);
    absl::StatusOr<int64_t> b = DTypeBytes(val.dtype, ir::NumElements(val.shape, g.max_tokens));
    if (!b.ok()) return absl::InvalidArgumentError(absl::StrCat("%", val.name, ": ", b.status().message()));
    bytes[v] = *b;
    if (val.storage == Storage::kKvCache && root[v] == v) stats.kv_bytes[val.device] += *b;
  }

  // Lifetimes.
  std::vector<int> first(nv, -1), last(nv, -1);
  for (ValueId v = 0; v < nv; ++v) first[v] = last[v] = g.value(v).producer;
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
    if (g.value(src).storage == Storage::kInput && g.value(src).producer < 0) first[root[dst]] = -1;
    if (g.value(dst).storage == Storage::kOutput) last[root[src]] = nops;
  }

  // Slots: step inputs first, then op outputs in op order, in place when allowed.
  std::vector<Slot> slots;
  std::vector<int> slot_of(nv, -1);
  auto new_slot = [&](ValueId v) {
    Slot s;
    s.size = AlignUp(std::max<int64_t>(bytes[v], 1));
    s.first = first[v];
    s.last = last[v];
    s.device = g.value(v).device;
    slot_of[v] = static_cast<int>(slots.size());
    slots.push_back(s);
  };
  for (ValueId v = 0; v < nv; ++v) {
    if (in_arena(v) && g.value(v).producer < 0) new_slot(v);
  }
  for (int i = 0; i < nops; ++i) {
    const Op& op = g.ops()[i];
    if (op.outputs.size() == 1 && in_arena(op.outputs[0])) {
      const ValueId o = op.outputs[0];
      for (size_t k = 0; k < op.inputs.size() && slot_of[o] < 0; ++k) {
        const ValueId r = root[op.inputs[k]];
        if (!in_arena(r) || slot_of[r] < 0 || last[r] != i || bytes[r] != bytes[o] ||
            g.value(r).device != g.value(o).device) {
          continue;
        }
        bool allowed = true;
        for (size_t k2 = 0; k2 < op.inputs.size(); ++k2) {
          if (root[op.inputs[k2]] == r && !OpAllowsInPlace(g, op, k2)) allowed = false;
        }
        if (!allowed) continue;
        slot_of[o] = slot_of[r];
        slots[slot_of[o]].last = last[o];
        ++stats.in_place;
      }
    }
    for (ValueId o : op.outputs) {
      if (in_arena(o) && slot_of[o] < 0) new_slot(o);
    }
  }

  std::map<Device, std::vector<int>> by_device;
  for (int s = 0; s < static_cast<int>(slots.size()); ++s) by_device[slots[s].device].push_back(s);
  for (const auto& [device, ids] : by_device) stats.arena_bytes[device] = PlaceSlots(slots, ids);

  for (ValueId v = 0; v < nv; ++v) {
    if (!in_arena(v)) continue;
    ++stats.values;
    stats.value_bytes[g.value(v).device] += AlignUp(std::max<int64_t>(bytes[v], 1));
  }
  for (ValueId v = 0; v < nv; ++v) {
    const ValueId r = root[v];
    if (in_arena(r)) g.mutable_value(v).arena_offset = slots[slot_of[r]].offset;
  }
  for (const auto& [device, b] : stats.arena_bytes) g.memory[device].arena_bytes = b;
  for (const auto& [device, b] : stats.kv_bytes) g.memory[device].kv_bytes = b;
  return stats;
}

Pass PlanMemory() {
  Pass p;
  p.name = "plan-memory";
  p.optional = false;
  p.run = [](Graph& g, PassContext&) { return PlanGraphMemory(g).status(); };
  return p;
}

}  // namespace vibrant::passes
