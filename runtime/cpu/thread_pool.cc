#include "runtime/cpu/thread_pool.h"

#include <algorithm>
#include <exception>

namespace vibrant::cpu {
namespace {
// True on a thread that is currently executing a ParallelFor chunk: nested
// ParallelFor calls then run inline instead of deadlocking on the pool.
thread_local bool in_parallel_region = false;
}  // namespace

ThreadPool::ThreadPool(int num_threads) {
  workers_.reserve(static_cast<size_t>(std::clamp(num_threads - 1, 0, kMaxThreads)));
  for (int i = 1; i < num_threads; ++i) {
    try {
      workers_.emplace_back([this] { WorkerLoop(); });
    } catch (const std::exception& e) {  // std::system_error: EAGAIN and the like
      creation_error_ = e.what();
      if (creation_error_.empty()) creation_error_ = "thread creation failed";
      break;
    }
  }
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  work_cv_.notify_all();
  for (std::thread& t : workers_) t.join();
}

void ThreadPool::RunChunks() {
  const bool was_in_region = in_parallel_region;
  in_parallel_region = true;
  for (;;) {
    const int64_t begin = next_.fetch_add(chunk_, std::memory_order_relaxed);
    if (begin >= n_) break;
    (*fn_)(begin, std::min(n_, begin + chunk_));
  }
  in_parallel_region = was_in_region;
}

void ThreadPool::WorkerLoop() {
  uint64_t seen = 0;
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      work_cv_.wait(lock, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
    }
    RunChunks();
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (--busy_workers_ == 0) done_cv_.notify_one();
    }
  }
}

void ThreadPool::ParallelFor(int64_t n, const std::function<void(int64_t, int64_t)>& fn,
                             int64_t min_chunk) {
  if (n <= 0) return;
  min_chunk = std::max<int64_t>(1, min_chunk);
  if (workers_.empty() || in_parallel_region || n <= min_chunk) {
    fn(0, n);
    return;
  }
  // About four chunks per thread balances uneven rows without much overhead.
  const int64_t target_chunks = 4 * static_cast<int64_t>(num_threads());
  const int64_t chunk = std::max(min_chunk, (n + target_chunks - 1) / target_chunks);
  {
    std::lock_guard<std::mutex> lock(mu_);
    fn_ = &fn;
    n_ = n;
    chunk_ = chunk;
    next_.store(0, std::memory_order_relaxed);
    busy_workers_ = static_cast<int>(workers_.size());
    ++generation_;
  }
  work_cv_.notify_all();
  RunChunks();
  std::unique_lock<std::mutex> lock(mu_);
  done_cv_.wait(lock, [&] { return busy_workers_ == 0; });
  fn_ = nullptr;
}

}  // namespace vibrant::cpu
