#include "api/gpu_fit.h"

#include <algorithm>
#include <map>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "passes/assign_devices.h"

namespace vibrant {
namespace {

std::string GiB(int64_t b) { return absl::StrFormat("%.2f GiB", static_cast<double>(b) / (1 << 30)); }

}  // namespace

int64_t ModelBytes::total() const {
  int64_t t = rest;
  for (int64_t b : layers) t += b;
  return t;
}

ModelBytes CountModelBytes(const ir::Graph& g) {
  ModelBytes m;
  std::map<std::string, bool> seen;  // weights by GGUF tensor: each counted once
  for (const ir::Value& v : g.values()) {
    const bool weight = v.storage == ir::Storage::kWeight;
    const bool cache = v.storage == ir::Storage::kKvCache && v.alias_of < 0 && v.producer < 0;
    if (!weight && !cache) continue;
    if (weight && seen[v.source]) continue;
    if (weight) seen[v.source] = true;
    absl::StatusOr<int64_t> bytes = DTypeBytes(v.dtype, ir::NumElements(v.shape, 1));
    const int64_t n = bytes.ok() ? *bytes : 0;
    const int64_t layer = passes::ValueLayer(v);
    if (layer < 0 || layer > (int64_t{1} << 20)) {
      m.rest += n;
      continue;
    }
    if (static_cast<int64_t>(m.layers.size()) <= layer) m.layers.resize(layer + 1, 0);
    m.layers[layer] += n;
  }
  return m;
}

int64_t FitGpuLayers(const ModelBytes& m, int64_t free_bytes, int64_t margin, std::string* why) {
  const int64_t whole = m.total() + margin;
  if (whole <= free_bytes) {
    *why = absl::StrCat("the model needs about ", GiB(whole), ", ", GiB(free_bytes), " free");
    return -1;
  }
  const int64_t n_layer = static_cast<int64_t>(m.layers.size());
  int64_t need = margin, fit = 0;
  for (int64_t n = 1; n <= n_layer; ++n) {  // the last n layers
    if (need + m.layers[n_layer - n] > free_bytes) break;
    need += m.layers[n_layer - n];
    fit = n;
  }
  if (fit == 0) {
    *why = absl::StrCat("the model needs about ", GiB(whole), ", ", GiB(free_bytes),
                        " free: not even one layer fits beside the margin");
    return 0;
  }
  *why = absl::StrCat("the model needs about ", GiB(whole), ", ", GiB(free_bytes), " free: the last ", fit, " of ",
                      n_layer, " layers fit (", GiB(need), "); the rest runs on the CPU (-ngl ", fit, ")");
  return fit;
}

}  // namespace vibrant
