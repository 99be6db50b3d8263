// The dispatch table's regions on the GPU (runtime/cuda/internal.h: DeviceMemory).
#include <algorithm>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "runtime/cuda/internal.h"

namespace vibrant::cuda {

using dispatch::Region;

DeviceMemory::~DeviceMemory() {
  for (uint8_t* p : base_) {
    if (p != nullptr) cudaFree(p);
  }
  if (io_host_ != nullptr) cudaFreeHost(io_host_);
  if (logits_host_ != nullptr) cudaFreeHost(logits_host_);
}

absl::StatusOr<std::unique_ptr<DeviceMemory>> DeviceMemory::Allocate(const dispatch::Table& t,
                                                                     WeightResolver& weights,
                                                                     const CudaDeviceInfo& device, int rank) {
  std::unique_ptr<DeviceMemory> m(new DeviceMemory());
  for (int r = 1; r < dispatch::kNumRegions; ++r) {
    const int64_t bytes = t.region_bytes[r];
    m->bytes_[r] = bytes;
    if (bytes == 0) continue;
    cudaError_t e = cudaMalloc(reinterpret_cast<void**>(&m->base_[r]), static_cast<size_t>(bytes));
    if (e != cudaSuccess) {
      cudaGetLastError();
      m->base_[r] = nullptr;
      size_t free_b = 0, total_b = 0;
      cudaMemGetInfo(&free_b, &total_b);
      return absl::ResourceExhaustedError(absl::StrCat(
          "CUDA backend: out of GPU memory allocating ", HumanBytes(bytes), " for the ",
          dispatch::RegionName(static_cast<Region>(r)), " (", HumanBytes(static_cast<int64_t>(free_b)),
          " free of ", HumanBytes(static_cast<int64_t>(total_b)), " on ", device.name, "): ",
          cudaGetErrorString(e)));
    }
  }
  for (const dispatch::WeightSlot& s : t.weights) {
    absl::StatusOr<absl::Span<const uint8_t>> data = weights(s.source);
    if (!data.ok()) {
      return absl::Status(data.status().code(), absl::StrCat("CUDA backend: weight '", s.source, "': ",
                                                             data.status().message()));
    }
    if (!s.rank_offsets.empty()) {
      // A tensor-parallel shard: this rank's rows of the tensor.
      if (rank < 0 || rank >= static_cast<int>(s.rank_offsets.size())) {
        return absl::InvalidArgumentError(absl::StrCat("CUDA backend: weight '", s.source, "' has ",
                                                       s.rank_offsets.size(), " shards, no rank ", rank));
      }
      const int64_t rows = s.bytes / s.row_bytes;
      const int64_t stride = s.row_stride != 0 ? s.row_stride : s.row_bytes;
      const int64_t start = s.rank_offsets[static_cast<size_t>(rank)];
      const int64_t size = static_cast<int64_t>(data->size());
      if (data->data() == nullptr || start > size || rows < 1 || (rows - 1) > (size - start) / stride ||
          (rows - 1) * stride + s.row_bytes > size - start) {
        return absl::InvalidArgumentError(absl::StrCat(
            "CUDA backend: weight '", s.source, "': rank ", rank, "'s shard (", rows, " rows of ", s.row_bytes,
            " bytes from byte ", start, ", stride ", stride, ") lies outside its ", size, " bytes"));
      }
      uint8_t* dst = m->base_[static_cast<int>(Region::kWeights)] + s.offset;
      VB_CUDA(cudaMemcpy2D(dst, static_cast<size_t>(s.row_bytes), data->data() + start, static_cast<size_t>(stride),
                           static_cast<size_t>(s.row_bytes), static_cast<size_t>(rows), cudaMemcpyHostToDevice),
              absl::StrCat("CUDA backend: uploading rank ", rank, "'s shard of weight '", s.source, "'"));
      m->host_weights_[s.offset] = nullptr;  // not one span of the host tensor (--verify reads none)
      continue;
    }
    // The slot holds the bytes the graph's values read from the tensor: all
    // of it, or (views of part of a tensor, ir::Value::source_offset) a prefix.
    if (static_cast<int64_t>(data->size()) < s.bytes || (s.bytes > 0 && data->data() == nullptr)) {
      return absl::InvalidArgumentError(absl::StrCat("CUDA backend: weight '", s.source, "' needs ", s.bytes,
                                                     " bytes, the resolver gave ", data->size()));
    }
    if (s.bytes > 0) {
      VB_CUDA(cudaMemcpy(m->base_[static_cast<int>(Region::kWeights)] + s.offset, data->data(),
                         static_cast<size_t>(s.bytes), cudaMemcpyHostToDevice),
              absl::StrCat("CUDA backend: uploading weight '", s.source, "'"));
    }
    m->host_weights_[s.offset] = data->data();
  }
  for (Region r : {Region::kKv, Region::kArena, Region::kState}) {
    if (m->bytes(r) > 0) {
      VB_CUDA(cudaMemset(m->base(r), 0, static_cast<size_t>(m->bytes(r))),
              absl::StrCat("CUDA backend: clearing the ", dispatch::RegionName(r)));
    }
  }
  // tokens [max_tokens], positions [max_tokens], sampling [8], token [1]
  // (padded to 16), and for paged plans seq_ids [max_tokens] and the block
  // table [n_seq * max_blocks].
  m->max_tokens_ = t.max_tokens;
  const size_t io_bytes = (3 * t.max_tokens + 16 + t.n_seq * t.max_blocks) * sizeof(int32_t);
  VB_CUDA(cudaMallocHost(reinterpret_cast<void**>(&m->io_host_), io_bytes),
          "CUDA backend: pinned host memory for the step inputs");
  std::memset(m->io_host_, 0, io_bytes);
  const int64_t logits = std::max<int64_t>(t.logits_elems.Eval(t.max_tokens), 1) * 4;
  VB_CUDA(cudaMallocHost(reinterpret_cast<void**>(&m->logits_host_), static_cast<size_t>(logits)),
          "CUDA backend: pinned host memory for the logits");
  return m;
}

void* DeviceMemory::Address(const dispatch::BufRef& b, int64_t T) const {
  if (b.region == Region::kNone) return nullptr;
  return base_[static_cast<int>(b.region)] + b.offset.Eval(T);
}

const uint8_t* DeviceMemory::HostWeight(int64_t offset) const {
  // The slot holding `offset` (a view of part of a tensor lies inside its slot).
  auto it = host_weights_.upper_bound(offset);
  if (it == host_weights_.begin()) return nullptr;
  --it;
  if (it->second == nullptr) return nullptr;
  return it->second + (offset - it->first);
}

}  // namespace vibrant::cuda
