// The collectives of a tensor-parallel graph (ir/ops.h: all_reduce,
// all_gather) as a backend calls them, and their in-process implementation
// for N simulated ranks on the CPU (one executor per rank, each on its own
// thread). A GPU backend would implement the same calls with NCCL.
#ifndef VIBRANT_RUNTIME_CPU_COLLECTIVES_H_
#define VIBRANT_RUNTIME_CPU_COLLECTIVES_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "runtime/cpu/ranks.h"

namespace vibrant {

class Collectives {
 public:
  virtual ~Collectives() = default;
  virtual int ranks() const = 0;
  // Called by every rank with its own `in` (n floats): `out` = the sum of
  // the ranks' `in`, in rank order (ir/ops.h: all_reduce). `in` and `out`
  // do not overlap. Returns once every rank has read every input.
  virtual absl::Status AllReduceSum(int rank, const float* in, float* out, int64_t n) = 0;
  // out[row, r * cols + j] = in_r[row, j] (ir/ops.h: all_gather).
  virtual absl::Status AllGather(int rank, const float* in, int64_t rows, int64_t cols, float* out) = 0;
  // A rank that fails outside a collective calls this, so that the others
  // return `why` instead of waiting for it forever.
  virtual void Abort(const absl::Status& why) = 0;
};

// Ranks as threads of one process. Every call is two barriers: after the
// ranks have posted their buffers, and after all have read them (a rank's
// input memory may be reused by its next op only then). Results are the same
// on every rank and do not depend on thread timing.
class LocalCollectives : public Collectives {
 public:
  explicit LocalCollectives(int ranks);
  int ranks() const override { return ranks_; }
  absl::Status AllReduceSum(int rank, const float* in, float* out, int64_t n) override;
  absl::Status AllGather(int rank, const float* in, int64_t rows, int64_t cols, float* out) override;
  void Abort(const absl::Status& why) override;
  // Clears an abort once every rank has returned (the next step may run).
  void Reset() { barrier_.Reset(); }

 private:
  absl::Status Post(int rank, const float* in, int64_t n);

  const int ranks_;
  RankBarrier barrier_;
  std::vector<const float*> in_;
  std::vector<int64_t> n_;
};

}  // namespace vibrant

#endif  // VIBRANT_RUNTIME_CPU_COLLECTIVES_H_
