#include "runtime/cpu/ranks.h"

#include <thread>
#include <vector>

namespace vibrant {

absl::Status RankBarrier::Wait() {
  std::unique_lock<std::mutex> lock(mu_);
  if (!aborted_.ok()) return aborted_;
  const uint64_t gen = generation_;
  if (++arrived_ == ranks_) {
    arrived_ = 0;
    ++generation_;
    cv_.notify_all();
    return absl::OkStatus();
  }
  cv_.wait(lock, [&] { return generation_ != gen || !aborted_.ok(); });
  return generation_ != gen ? absl::OkStatus() : aborted_;
}

void RankBarrier::Abort(const absl::Status& why) {
  std::lock_guard<std::mutex> lock(mu_);
  if (aborted_.ok()) aborted_ = why.ok() ? absl::AbortedError("a rank stopped") : why;
  cv_.notify_all();
}

void RankBarrier::Reset() {
  std::lock_guard<std::mutex> lock(mu_);
  aborted_ = absl::OkStatus();
  arrived_ = 0;
}

absl::Status RunOnRanks(int ranks, const std::function<absl::Status(int)>& fn,
                        const std::function<void(const absl::Status&)>& abort) {
  std::vector<absl::Status> status(static_cast<size_t>(ranks));
  auto run = [&](int r) {
    status[static_cast<size_t>(r)] = fn(r);
    if (!status[static_cast<size_t>(r)].ok()) abort(status[static_cast<size_t>(r)]);
  };
  std::vector<std::thread> threads;
  threads.reserve(static_cast<size_t>(ranks > 1 ? ranks - 1 : 0));
  for (int r = 1; r < ranks; ++r) threads.emplace_back(run, r);
  run(0);
  for (std::thread& t : threads) t.join();
  for (const absl::Status& s : status) {
    if (!s.ok() && s.code() != absl::StatusCode::kAborted) return s;
  }
  for (const absl::Status& s : status) {
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

}  // namespace vibrant
