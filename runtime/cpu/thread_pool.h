// A fixed-size, persistent thread pool for the CPU backend's data-parallel
// kernels.
//
// Threads are created once (by the executor) and reused by every op of every
// step; ParallelFor hands a range out in chunks to the workers and the calling
// thread, and returns when all of it is done. Work is split by output element
// (rows of a matmul, tiles of rows and tokens, heads of an attention), so
// results never depend on the number of threads or on the schedule.
//
// Handing work over is cheap: between jobs the workers spin on an atomic job
// counter for a short while (kSpinMicros) before they sleep on a condition
// variable, so the ~300 jobs of a decode step, which follow each other within
// microseconds, cost no system call; an idle pool sleeps.
//
// Chunks are claimed from one atomic word that holds the job's number and the
// next index, and the caller waits for the chunks to be done, not for the
// workers to show up: on a machine with more runnable threads than cores, a
// worker that the OS has not scheduled does not hold up a job (the caller and
// the others do its share); only a chunk in progress is waited for.
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
  // "0 = default" option before constructing the pool). Never
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

  // How long an idle worker spins before it sleeps.
  static constexpr int64_t kSpinMicros = 300;

 private:
  void WorkerLoop();
  // Claims and runs chunks of job `job` while it is current and has some left.
  void RunJob(uint64_t job);

  // Job parameters, in two slots (job number & 1): a slot is rewritten only
  // once the job before it is complete, so a claimed chunk reads its own.
  struct Job {
    std::atomic<const std::function<void(int64_t, int64_t)>*> fn{nullptr};
    std::atomic<int64_t> n{0};
    std::atomic<int64_t> chunk{1};
  };
  static constexpr int kIndexBits = 40;
  static constexpr uint64_t kJobMask = (uint64_t{1} << (64 - kIndexBits)) - 1;

  std::vector<std::thread> workers_;
  std::string creation_error_;
  std::mutex mu_;
  std::condition_variable work_cv_;
  Job jobs_[2];
  std::atomic<uint64_t> next_{0};        // (job number << kIndexBits) | next index
  std::atomic<int64_t> done_{0};         // indices of the current job done
  std::atomic<uint64_t> generation_{0};  // the current job number, for waiting workers
  std::atomic<int> sleepers_{0};         // workers waiting on work_cv_
  std::atomic<bool> stop_{false};
  uint64_t job_seq_ = 0;                 // the caller's job counter
};

// The default thread count of the CPU backend: the physical cores this
// process may run on (cpu_features.h PhysicalCoreCount).
int DefaultThreadCount();

}  // namespace vibrant::cpu

#endif  // VIBRANT_RUNTIME_CPU_THREAD_POOL_H_
