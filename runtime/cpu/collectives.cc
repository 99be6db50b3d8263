#include "runtime/cpu/collectives.h"

#include "absl/strings/str_cat.h"

namespace vibrant {

LocalCollectives::LocalCollectives(int ranks)
    : ranks_(ranks), barrier_(ranks), in_(ranks, nullptr), n_(ranks, 0) {}

void LocalCollectives::Abort(const absl::Status& why) { barrier_.Abort(why); }

absl::Status LocalCollectives::Post(int rank, const float* in, int64_t n) {
  if (rank < 0 || rank >= ranks_) {
    absl::Status s = absl::InvalidArgumentError(absl::StrCat("collective: rank ", rank, " of ", ranks_));
    Abort(s);
    return s;
  }
  barrier_.Locked([&] {
    in_[rank] = in;
    n_[rank] = n;
  });
  if (absl::Status s = barrier_.Wait(); !s.ok()) return s;
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
  return barrier_.Wait();
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
  return barrier_.Wait();
}

}  // namespace vibrant
