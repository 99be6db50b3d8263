#include "runtime/cpu/collectives.h"

#include "absl/strings/str_cat.h"

namespace vibrant {

LocalCollectives::LocalCollectives(int ranks) : ranks_(ranks), in_(ranks, nullptr), n_(ranks, 0) {}

absl::Status LocalCollectives::Barrier() {
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

void LocalCollectives::Abort(const absl::Status& why) {
  std::lock_guard<std::mutex> lock(mu_);
  if (aborted_.ok()) aborted_ = why.ok() ? absl::AbortedError("a rank stopped") : why;
  cv_.notify_all();
}

void LocalCollectives::Reset() {
  std::lock_guard<std::mutex> lock(mu_);
  aborted_ = absl::OkStatus();
  arrived_ = 0;
}

absl::Status LocalCollectives::Post(int rank, const float* in, int64_t n) {
  if (rank < 0 || rank >= ranks_) {
    absl::Status s = absl::InvalidArgumentError(absl::StrCat("collective: rank ", rank, " of ", ranks_));
    Abort(s);
    return s;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    in_[rank] = in;
    n_[rank] = n;
  }
  if (absl::Status s = Barrier(); !s.ok()) return s;
  for (int r = 0; r < ranks_; ++r) {
    if (n_[r] != n) {
      absl::Status s = absl::InternalError(absl::StrCat("collective: rank ", rank, " sends ", n,
                                                        " values, rank ", r, " ", n_[r]));
      Abort(s);
      return s;
    }
  }
  return absl::OkStatus();
}

absl::Status LocalCollectives::AllReduceSum(int rank, const float* in, float* out, int64_t n) {
  if (absl::Status s = Post(rank, in, n); !s.ok()) return s;
  for (int64_t i = 0; i < n; ++i) {
    float s = in_[0][i];
    for (int r = 1; r < ranks_; ++r) s += in_[r][i];
    out[i] = s;
  }
  return Barrier();
}

absl::Status LocalCollectives::AllGather(int rank, const float* in, int64_t rows, int64_t cols, float* out) {
  if (absl::Status s = Post(rank, in, rows * cols); !s.ok()) return s;
  for (int64_t row = 0; row < rows; ++row) {
    for (int r = 0; r < ranks_; ++r) {
      const float* src = in_[r] + row * cols;
      float* dst = out + (row * ranks_ + r) * cols;
      for (int64_t j = 0; j < cols; ++j) dst[j] = src[j];
    }
  }
  return Barrier();
}

}  // namespace vibrant
