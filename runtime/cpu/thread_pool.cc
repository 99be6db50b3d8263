#include "runtime/cpu/thread_pool.h"

#include <algorithm>
#include <exception>
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
    stop_.store(true);
  }
  work_cv_.notify_all();
  for (std::thread& t : workers_) t.join();
}

void ThreadPool::RunJob(uint64_t job) {
  const bool was_in_region = in_parallel_region;
  in_parallel_region = true;
  Job& j = jobs_[job & 1];
  const uint64_t tag = (job & kJobMask) << kIndexBits;
  const uint64_t index_mask = (uint64_t{1} << kIndexBits) - 1;
  uint64_t v = next_.load(std::memory_order_acquire);
  for (;;) {
    if ((v & ~index_mask) != tag) break;  // another job is current
    const int64_t begin = static_cast<int64_t>(v & index_mask);
    const int64_t n = j.n.load(std::memory_order_relaxed);
    const int64_t chunk = j.chunk.load(std::memory_order_relaxed);
    if (begin >= n) break;
    if (!next_.compare_exchange_weak(v, v + static_cast<uint64_t>(chunk),
                                     std::memory_order_acq_rel, std::memory_order_acquire)) {
      continue;  // v reloaded
    }
    // The chunk is ours and the job incomplete: its slot is not rewritten.
    const int64_t end = std::min(n, begin + chunk);
    (*j.fn.load(std::memory_order_relaxed))(begin, end);
    done_.fetch_add(end - begin, std::memory_order_release);
    v = next_.load(std::memory_order_acquire);
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
      work_cv_.wait(lock, [&] { return stop_.load() || generation_.load() != seen; });
      sleepers_.fetch_sub(1);
      if (stop_.load()) return;
      g = generation_.load(std::memory_order_acquire);
    }
    seen = g;
    RunJob(g);
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
  const uint64_t job = ++job_seq_;
  Job& j = jobs_[job & 1];
  j.fn.store(&fn, std::memory_order_relaxed);
  j.n.store(n, std::memory_order_relaxed);
  j.chunk.store(chunk, std::memory_order_relaxed);
  done_.store(0, std::memory_order_relaxed);
  next_.store((job & kJobMask) << kIndexBits, std::memory_order_release);  // publishes the job
  generation_.store(job);  // seq_cst: pairs with the sleepers check
  if (sleepers_.load() > 0) {
    { std::lock_guard<std::mutex> lock(mu_); }
    work_cv_.notify_all();
  }
  RunJob(job);
  // Every chunk is claimed; wait for those still running elsewhere.
  for (int i = 0; done_.load(std::memory_order_acquire) < n; ++i) {
    VB_PAUSE();
    if ((i & 255) == 255) std::this_thread::yield();
  }
}

}  // namespace vibrant::cpu
