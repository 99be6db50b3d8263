// The ranks of a tensor-parallel plan as threads of one process, shared by
// the CPU simulation (runtime/cpu/tp_executor.h, collectives.h) and the GPU
// executor (runtime/cuda/tp_executor.h): a barrier the ranks meet at, which a
// failing rank can abort so that no other waits for it forever, and running
// one function on every rank at once.
#ifndef VIBRANT_RUNTIME_CPU_RANKS_H_
#define VIBRANT_RUNTIME_CPU_RANKS_H_

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>

#include "absl/status/status.h"

namespace vibrant {

class RankBarrier {
 public:
  explicit RankBarrier(int ranks) : ranks_(ranks) {}
  // Returns once all ranks have called it (OK), or the abort's status.
  absl::Status Wait();
  // Every waiting and later Wait returns `why` (Aborted when `why` is OK)
  // until Reset.
  void Abort(const absl::Status& why);
  // Clears an abort once every rank has returned (the next step may run).
  void Reset();
  // Runs `f` under the barrier's lock: what ranks post for each other before
  // Wait is visible to all of them after it.
  template <typename F>
  void Locked(F&& f) {
    std::lock_guard<std::mutex> lock(mu_);
    f();
  }
  int ranks() const { return ranks_; }

 private:
  const int ranks_;
  std::mutex mu_;
  std::condition_variable cv_;
  int arrived_ = 0;
  uint64_t generation_ = 0;
  absl::Status aborted_;
};

// fn(rank) for every rank at once, rank 0 on the caller's thread and the
// others on threads of their own; a rank that fails calls `abort` with its
// error (so that the others stop waiting for it). Returns the first rank's
// own error, not the aborts it caused in the others, or OK.
absl::Status RunOnRanks(int ranks, const std::function<absl::Status(int)>& fn,
                        const std::function<void(const absl::Status&)>& abort);

}  // namespace vibrant

#endif  // VIBRANT_RUNTIME_CPU_RANKS_H_
