// A small fixed-size thread pool for the CPU backend's data-parallel kernels.
//
// Threads are created once (by the executor) and reused by every op of every
// step; ParallelFor hands a range out in chunks to the workers and the calling
// thread, and returns when all of it is done. Work is split by output element
// (rows of a matmul, heads of an attention), so results never depend on the
// number of threads or on the schedule.
#ifndef VIBRANT_RUNTIME_CPU_THREAD_POOL_H_
#define VIBRANT_RUNTIME_CPU_THREAD_POOL_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace vibrant::cpu {

// The most threads a pool runs (the executor caps larger requests).
inline constexpr int kMaxThreads = 1024;

class ThreadPool {
 public:
  // `num_threads` counts the calling thread: 1 (or less) runs everything
  // inline and starts no thread; 0 is not special here (the executor maps its
  // "0 = hardware concurrency" option before constructing the pool). Never
  // throws: when the system refuses a thread (process or memory limits), the
  // pool runs with the threads it got; num_threads() says how many and
  // creation_error() why.
  explicit ThreadPool(int num_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  // Threads taking part in ParallelFor, the caller included.
  int num_threads() const { return static_cast<int>(workers_.size()) + 1; }
  // Why fewer threads than requested were created; empty when all were.
  const std::string& creation_error() const { return creation_error_; }

  // Calls fn(begin, end) over disjoint chunks covering [0, n), each at least
  // `min_chunk` long (except possibly the last), and blocks until all return.
  // Calls made from inside `fn` (nested) or with little work run inline. Not
  // to be called concurrently from several outside threads.
  void ParallelFor(int64_t n, const std::function<void(int64_t, int64_t)>& fn,
                   int64_t min_chunk = 1);

 private:
  void WorkerLoop();
  void RunChunks();

  std::vector<std::thread> workers_;
  std::string creation_error_;
  std::mutex mu_;
  std::condition_variable work_cv_;
  std::condition_variable done_cv_;
  uint64_t generation_ = 0;  // bumped for every job; guarded by mu_
  bool stop_ = false;        // guarded by mu_
  int busy_workers_ = 0;     // workers still inside the current job; guarded by mu_

  // The current job; written under mu_ before generation_ is bumped.
  const std::function<void(int64_t, int64_t)>* fn_ = nullptr;
  int64_t n_ = 0;
  int64_t chunk_ = 1;
  std::atomic<int64_t> next_{0};
};

}  // namespace vibrant::cpu

#endif  // VIBRANT_RUNTIME_CPU_THREAD_POOL_H_
