#include "runtime/cpu/thread_pool.h"

#include <algorithm>
#include <chrono>

#include "runtime/cpu/cpu_features.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define VB_PAUSE() _mm_pause()
#elif defined(__aarch64__)
#define VB_PAUSE() asm volatile("yield")
#else
#define VB_PAUSE() \
  do {             \
  } while (0)
#endif

namespace vibrant::cpu {
namespace {
// True on a thread that is currently executing a ParallelFor chunk: nested
// ParallelFor calls then run inline instead of deadlocking on the pool.
thread_local bool in_parallel_region = false;

using Clock = std::chrono::steady_clock;
}  // namespace

int DefaultThreadCount() { return PhysicalCoreCount(); }

ThreadPool::ThreadPool(int num_threads) {
  for (int i = 1; i < num_threads; ++i) {
    workers_.emplace_back([this] { WorkerLoop(); });
  }
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_.store(true);
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
    // Spin for the next job, then sleep.
    uint64_t g = generation_.load(std::memory_order_acquire);
    if (g == seen) {
      const Clock::time_point deadline = Clock::now() + std::chrono::microseconds(kSpinMicros);
      for (int i = 0; (g = generation_.load(std::memory_order_acquire)) == seen; ++i) {
        if (stop_.load(std::memory_order_relaxed)) return;
        VB_PAUSE();
        if ((i & 63) == 63 && Clock::now() > deadline) break;
      }
    }
    if (g == seen) {
      std::unique_lock<std::mutex> lock(mu_);
      sleepers_.fetch_add(1);  // seq_cst: pairs with ParallelFor's bump and check
      work_cv_.wait(lock, [&] {
        return stop_.load() || generation_.load() != seen;
      });
      sleepers_.fetch_sub(1);
      if (stop_.load()) return;
      g = generation_.load(std::memory_order_acquire);
    }
    seen = g;
    RunChunks();
    pending_.fetch_sub(1, std::memory_order_acq_rel);
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
  fn_ = &fn;
  n_ = n;
  chunk_ = chunk;
  next_.store(0, std::memory_order_relaxed);
  pending_.store(static_cast<int>(workers_.size()), std::memory_order_relaxed);
  generation_.fetch_add(1);  // seq_cst: publishes the job
  if (sleepers_.load() > 0) {
    { std::lock_guard<std::mutex> lock(mu_); }
    work_cv_.notify_all();
  }
  RunChunks();
  // Wait for the workers to leave the job (they may still be finishing a
  // chunk, or not have started yet, but no chunk is left for them).
  for (int i = 0; pending_.load(std::memory_order_acquire) != 0; ++i) {
    VB_PAUSE();
    if ((i & 1023) == 1023) std::this_thread::yield();
  }
  fn_ = nullptr;
}

}  // namespace vibrant::cpu
