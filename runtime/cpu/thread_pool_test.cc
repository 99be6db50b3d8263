#include "runtime/cpu/thread_pool.h"

#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace vibrant::cpu {
namespace {

TEST(ThreadPool, CoversTheRange) {
  ThreadPool pool(4);
  EXPECT_EQ(pool.num_threads(), 4);
  EXPECT_TRUE(pool.creation_error().empty());
  std::vector<std::atomic<int>> hits(1000);
  pool.ParallelFor(1000, [&](int64_t a, int64_t b) {
    for (int64_t i = a; i < b; ++i) hits[i]++;
  });
  for (const auto& h : hits) EXPECT_EQ(h.load(), 1);
}

#if defined(__SANITIZE_ADDRESS__)
#define VIBRANT_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define VIBRANT_ASAN 1
#endif
#endif

// Issue #16: when the system refuses threads, the pool runs with those it
// got instead of throwing std::system_error out of the constructor (which
// aborted vibrant-run). The child process limits its address space to what
// it uses plus 64 MiB, so that at most a handful of 8 MiB thread stacks fit.
TEST(ThreadPoolDeathTest, RunsWithTheThreadsTheSystemGives) {
#ifdef VIBRANT_ASAN
  GTEST_SKIP() << "an address-space limit is incompatible with AddressSanitizer's shadow memory";
#else
  EXPECT_EXIT(
      {
        long pages = 0;
        std::ifstream("/proc/self/statm") >> pages;
        const rlim_t used = static_cast<rlim_t>(pages) * ::sysconf(_SC_PAGESIZE);
        struct rlimit lim;
        lim.rlim_cur = used + (rlim_t{64} << 20);
        lim.rlim_max = lim.rlim_cur;
        if (::setrlimit(RLIMIT_AS, &lim) != 0) std::exit(4);
        ThreadPool pool(200);
        if (pool.num_threads() >= 200 || pool.num_threads() < 1) std::exit(5);
        if (pool.creation_error().empty()) std::exit(6);
        std::atomic<int64_t> sum{0};
        pool.ParallelFor(10000, [&](int64_t a, int64_t b) {
          for (int64_t i = a; i < b; ++i) sum += i;
        });
        std::exit(sum == int64_t{10000} * 9999 / 2 ? 0 : 7);
      },
      ::testing::ExitedWithCode(0), "");
#endif
}

}  // namespace
}  // namespace vibrant::cpu
