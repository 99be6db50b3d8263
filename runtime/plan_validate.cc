#include "runtime/plan_validate.h"

#include <unistd.h>

#include <cctype>
#include <cstdlib>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "ir/verifier.h"
#include "passes/memory_check.h"

namespace vibrant {
namespace {

using ir::Graph;
using ir::Op;
using ir::OpKind;
using ir::Storage;
using ir::Value;
using ir::ValueId;

absl::string_view AV(std::string_view s) { return absl::string_view(s.data(), s.size()); }

absl::Status Invalid(const std::string& msg) { return absl::InvalidArgumentError(msg); }

bool AddTo(int64_t* sum, int64_t x) { return !__builtin_add_overflow(*sum, x, sum); }

int64_t AlignUp(int64_t n, int64_t a) { return (n + a - 1) / a * a; }

std::string Label(const Graph& g, ValueId v) {
  return absl::StrCat("%", g.value(v).name, " (", AV(ir::DeviceName(g.value(v).device)), ")");
}

}  // namespace

int64_t GraphMemoryNeeds::arena_bytes() const {
  int64_t s = 0;
  for (const auto& [d, m] : devices) s += m.arena_bytes;
  return s;
}

int64_t GraphMemoryNeeds::kv_bytes() const {
  int64_t s = 0;
  for (const auto& [d, m] : devices) s += m.kv_bytes;
  return s;
}

absl::StatusOr<GraphMemoryNeeds> ValidateExecutableGraph(const Graph& g) {
  if (absl::Status s = ir::Verify(g); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat("invalid graph: ", s.message()));
  }
  const ValueId nv = static_cast<ValueId>(g.values().size());

  // Storage roots: a reshape is a view of its input, a kv_store result is the
  // cache it updates (alias_of, checked by the verifier).
  std::vector<ValueId> root(nv);
  for (ValueId v = 0; v < nv; ++v) {
    const Value& val = g.value(v);
    root[v] = val.storage == Storage::kKvCache && val.alias_of >= 0 ? val.alias_of : v;
  }
  for (const Op& op : g.ops()) {
    if (op.kind == OpKind::kReshape && op.inputs.size() == 1 && op.outputs.size() == 1) {
      root[op.outputs[0]] = root[op.inputs[0]];
    }
  }
  std::vector<int64_t> bytes(nv, 0);
  for (ValueId v = 0; v < nv; ++v) {
    const Value& val = g.value(v);
    absl::StatusOr<int64_t> b = DTypeBytes(val.dtype, ir::NumElements(val.shape, g.max_tokens));
    if (!b.ok() || *b < 0) return Invalid(absl::StrCat(Label(g, v), ": size does not fit"));
    bytes[v] = *b;
  }
  auto in_arena = [&](ValueId r) {
    const Storage s = g.value(r).storage;
    return s == Storage::kInput || s == Storage::kActivation || s == Storage::kOutput;
  };

  GraphMemoryNeeds needs;
  needs.planned = !g.memory.empty();
  for (ValueId v = 0; v < nv; ++v) {
    const Value& val = g.value(v);
    if (root[v] != v) {
      // Every view lies inside its root.
      if (bytes[v] > bytes[root[v]]) {
        return Invalid(absl::StrCat(Label(g, v), ": a view of ", bytes[v], " bytes of ",
                                    Label(g, root[v]), ", which has ", bytes[root[v]]));
      }
      continue;
    }
    GraphMemoryNeeds::Device& d = needs.devices[val.device];
    if (val.storage == Storage::kKvCache) {
      if (!AddTo(&d.kv_bytes, bytes[v])) return Invalid("the KV caches' size overflows");
    } else if (in_arena(v)) {
      const int64_t slot = AlignUp(std::max<int64_t>(bytes[v], 1), passes::kArenaAlignment);
      if (!AddTo(&d.unshared_arena_bytes, slot)) return Invalid("the activations' size overflows");
    }
  }

  if (!needs.planned) {
    for (auto& [device, d] : needs.devices) d.arena_bytes = d.unshared_arena_bytes;
  } else {
    if (absl::Status s = passes::CheckMemoryPlan(g); !s.ok()) return s;
    for (const auto& [device, mem] : g.memory) {
      GraphMemoryNeeds::Device& d = needs.devices[device];
      if (mem.arena_bytes > d.unshared_arena_bytes) {
        return Invalid(absl::StrCat("memory plan: the ", AV(ir::DeviceName(device)), " arena of ",
                                    mem.arena_bytes, " bytes is larger than the ",
                                    d.unshared_arena_bytes,
                                    " bytes its values take without any sharing"));
      }
      d.arena_bytes = mem.arena_bytes;
      d.kv_bytes = mem.kv_bytes;  // equal to the caches' sum (CheckMemoryPlan)
    }
  }
  int64_t total = 0;
  for (const auto& [device, d] : needs.devices) {
    if (!AddTo(&total, d.arena_bytes) || !AddTo(&total, d.kv_bytes)) {
      return Invalid("the graph's memory overflows");
    }
  }
  return needs;
}

absl::StatusOr<std::optional<int64_t>> ParseMemorySize(std::string_view text) {
  std::string t(text);
  while (!t.empty() && std::isspace(static_cast<unsigned char>(t.back()))) t.pop_back();
  if (t == "none" || t == "unlimited") return std::optional<int64_t>();
  int shift = 0;
  if (!t.empty()) {
    switch (std::toupper(static_cast<unsigned char>(t.back()))) {
      case 'K': shift = 10; break;
      case 'M': shift = 20; break;
      case 'G': shift = 30; break;
      case 'T': shift = 40; break;
      default: break;
    }
    if (shift != 0) t.pop_back();
  }
  double value = 0;
  if (t.empty() || !absl::SimpleAtod(t, &value) || !(value >= 0) ||
      t.find_first_not_of("0123456789.") != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(
        "'", AV(text), "' is not a size (bytes, or a number with K, M, G or T; or none)"));
  }
  const double b = value * static_cast<double>(int64_t{1} << shift);
  if (b >= 9.2e18) return absl::InvalidArgumentError(absl::StrCat("'", AV(text), "' is too large"));
  return std::optional<int64_t>(static_cast<int64_t>(b));
}

absl::StatusOr<std::optional<MemoryLimit>> MemoryLimitFromEnv() {
  const char* env = std::getenv(kMaxMemoryEnv);
  if (env == nullptr) return std::optional<MemoryLimit>();
  absl::StatusOr<std::optional<int64_t>> size = ParseMemorySize(env);
  if (!size.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(kMaxMemoryEnv, ": ", size.status().message()));
  }
  MemoryLimit limit;
  limit.bytes = *size;
  limit.source = absl::StrCat(kMaxMemoryEnv, "=", env);
  return std::optional<MemoryLimit>(limit);
}

absl::StatusOr<MemoryLimit> HostMemoryLimit() {
  absl::StatusOr<std::optional<MemoryLimit>> env = MemoryLimitFromEnv();
  if (!env.ok()) return env.status();
  if (env->has_value()) return **env;
  MemoryLimit limit;
  const long pages = ::sysconf(_SC_PHYS_PAGES);
  const long page = ::sysconf(_SC_PAGESIZE);
  if (pages > 0 && page > 0) limit.bytes = static_cast<int64_t>(pages) * page;
  limit.source = "this machine's physical memory";
  return limit;
}

std::string FormatBytes(int64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 6) {
    v /= 1024;
    ++u;
  }
  return u == 0 ? absl::StrCat(bytes, " B") : absl::StrFormat("%.1f %s", v, units[u]);
}

absl::Status CheckMemoryLimit(int64_t bytes, std::string_view what, const MemoryLimit& limit) {
  if (!limit.bytes.has_value() || bytes <= *limit.bytes) return absl::OkStatus();
  return absl::ResourceExhaustedError(absl::StrCat(
      "the plan needs ", FormatBytes(bytes), " (", bytes, " bytes) for ", AV(what),
      ", more than the limit of ", FormatBytes(*limit.bytes), " (", AV(limit.source),
      "); set ", kMaxMemoryEnv, "=SIZE (e.g. 64G, or none) to change the limit"));
}

}  // namespace vibrant
