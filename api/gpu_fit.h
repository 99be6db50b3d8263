// How much of a model one GPU takes: the whole model, the last N layers
// (a split with the CPU, -ngl N), or nothing. `--device auto` for a GGUF
// (api/model.h) asks this with the GPU's free memory, so that a model larger
// than VRAM runs split instead of entirely on the CPU.
#ifndef VIBRANT_API_GPU_FIT_H_
#define VIBRANT_API_GPU_FIT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "ir/graph.h"

namespace vibrant {

// A lowered graph's bytes by where a split would put them: each repeating
// layer's weights and KV caches (passes::ValueLayer), and the rest (the
// token embedding, the output head and norm; on the CPU in a split).
struct ModelBytes {
  std::vector<int64_t> layers;  // by layer index
  int64_t rest = 0;
  int64_t total() const;
};
ModelBytes CountModelBytes(const ir::Graph& g);

// The fit for `free_bytes` of GPU memory, keeping `margin` bytes for
// activations, scratch and CUDA's own needs: -1 when the whole model fits;
// else the most layers N (1..n_layer) whose weights and caches fit, the
// model then split -ngl N; 0 when not even one layer does. `why` says what
// it found.
int64_t FitGpuLayers(const ModelBytes& m, int64_t free_bytes, int64_t margin, std::string* why);

}  // namespace vibrant

#endif  // VIBRANT_API_GPU_FIT_H_
