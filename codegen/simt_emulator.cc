#include "codegen/simt_emulator.h"

#include <ucontext.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "absl/strings/str_cat.h"

namespace vibrant::codegen::simt {
namespace {

constexpr size_t kStackBytes = 256 * 1024;

struct Barrier {
  int expected = 0;
  int count = 0;
  uint64_t generation = 0;
};

struct Thread {
  ucontext_t ctx;
  std::unique_ptr<char[]> stack;
  Dim3 tid;
  bool done = false;
};

struct Run {
  const std::function<void()>* body = nullptr;
  Dim3 grid, block, block_idx;
  std::vector<Thread> threads;
  Barrier block_barrier;
  std::vector<Barrier> warp_barriers;
  std::vector<std::vector<unsigned char>> warp_buffers;  // 32 deposits each
  ucontext_t scheduler;
  Thread* current = nullptr;
  uint64_t progress = 0;  // barrier releases and finished threads
};

Run* g_run = nullptr;

void Yield() { swapcontext(&g_run->current->ctx, &g_run->scheduler); }

void Arrive(Barrier& b) {
  const uint64_t gen = b.generation;
  if (++b.count == b.expected) {
    b.count = 0;
    ++b.generation;
    ++g_run->progress;
    Yield();  // let the others go first, in the scheduler's order
    return;
  }
  while (b.generation == gen) Yield();
}

void Entry() {
  (*g_run->body)();
  g_run->current->done = true;
  ++g_run->progress;
  swapcontext(&g_run->current->ctx, &g_run->scheduler);  // never resumed
}

}  // namespace

const Dim3& ThreadIdx() { return g_run->current->tid; }
const Dim3& BlockIdx() { return g_run->block_idx; }
const Dim3& BlockDim() { return g_run->block; }
const Dim3& GridDim() { return g_run->grid; }
int LaneId() { return static_cast<int>(g_run->current->tid.x % 32); }

void SyncThreads() { Arrive(g_run->block_barrier); }

void WarpExchange(const void* mine, size_t bytes, void* all) {
  const int warp = static_cast<int>(g_run->current->tid.x / 32);
  std::vector<unsigned char>& buf = g_run->warp_buffers[warp];
  if (buf.size() < 32 * bytes) buf.resize(32 * bytes);  // same size for every lane of a call
  std::memcpy(buf.data() + LaneId() * bytes, mine, bytes);
  Arrive(g_run->warp_barriers[warp]);
  std::memcpy(all, buf.data(), 32 * bytes);
  Arrive(g_run->warp_barriers[warp]);  // nobody deposits again before all have read
}

absl::Status Launch(Dim3 grid, Dim3 block, const std::function<void()>& body, uint32_t seed) {
  if (block.y != 1 || block.z != 1 || block.x == 0 || block.x % 32 != 0 || block.x > 1024) {
    return absl::InvalidArgumentError(absl::StrCat("simt: unsupported block (", block.x, ", ",
                                                   block.y, ", ", block.z, ")"));
  }
  if (g_run != nullptr) return absl::FailedPreconditionError("simt: Launch is not reentrant");
  std::mt19937 rng(seed);
  Run run;
  run.body = &body;
  run.grid = grid;
  run.block = block;
  const int n = static_cast<int>(block.x), warps = n / 32;
  run.threads.resize(n);
  for (Thread& t : run.threads) t.stack.reset(new char[kStackBytes]);
  g_run = &run;
  absl::Status status;
  for (unsigned bz = 0; bz < grid.z && status.ok(); ++bz) {
    for (unsigned by = 0; by < grid.y && status.ok(); ++by) {
      for (unsigned bx = 0; bx < grid.x && status.ok(); ++bx) {
        run.block_idx = Dim3{bx, by, bz};
        run.block_barrier = Barrier{n, 0, 0};
        run.warp_barriers.assign(warps, Barrier{32, 0, 0});
        run.warp_buffers.assign(warps, {});
        for (int i = 0; i < n; ++i) {
          Thread& t = run.threads[i];
          t.tid = Dim3{static_cast<unsigned>(i), 0, 0};
          t.done = false;
          getcontext(&t.ctx);
          t.ctx.uc_stack.ss_sp = t.stack.get();
          t.ctx.uc_stack.ss_size = kStackBytes;
          t.ctx.uc_link = nullptr;
          makecontext(&t.ctx, Entry, 0);
        }
        std::vector<int> order(n);
        for (int i = 0; i < n; ++i) order[i] = i;
        int live = n;
        while (live > 0) {
          std::shuffle(order.begin(), order.end(), rng);
          const uint64_t before = run.progress;
          for (int i : order) {
            Thread& t = run.threads[i];
            if (t.done) continue;
            run.current = &t;
            swapcontext(&run.scheduler, &t.ctx);
          }
          live = 0;
          for (const Thread& t : run.threads) live += t.done ? 0 : 1;
          if (live > 0 && run.progress == before) {
            status = absl::InternalError(absl::StrCat(
                "simt: deadlock in block (", bx, ", ", by, ", ", bz, "): ", live,
                " threads wait at barriers that cannot complete"));
            break;
          }
        }
      }
    }
  }
  g_run = nullptr;
  return status;
}

}  // namespace vibrant::codegen::simt
