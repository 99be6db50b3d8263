// vibrant_tp_probe: checks the tensor-parallel plumbing end to end with real
// processes, one per GPU: the environment (runtime/tp_bootstrap.h), rank 0's
// NCCL unique id served over TCP, an NCCL communicator, and an f32 all-reduce
// and all-gather whose results are checked exactly (small integers).
//
//   vibrant_tp_probe                 one rank, configured by VIBRANT_TP_* (or
//                                    torchrun's variables); uses GPU local_rank
//   vibrant_tp_probe --launch N      starts N ranks on this host (127.0.0.1, a
//                                    free port), waits, reports; exit 77 (skip)
//                                    when this host has fewer than N GPUs or no NCCL
//
// Across hosts, start one process per GPU on every host with
// VIBRANT_TP_RANK / VIBRANT_TP_WORLD_SIZE / VIBRANT_TP_LOCAL_RANK /
// VIBRANT_TP_ADDR=<host of rank 0>:<port> (docs/architecture.md).
#include <arpa/inet.h>
#include <cuda_runtime_api.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "runtime/cuda/device.h"
#include "runtime/cuda/nccl.h"
#include "runtime/tp_bootstrap.h"

extern char** environ;

namespace vibrant {
namespace {

constexpr int kSkip = 77;  // ctest's SKIP_RETURN_CODE

absl::Status Cuda(cudaError_t e, const char* what) { return CudaStatus(static_cast<int>(e), what); }

// One rank: exchange the id, init NCCL, run and check the collectives.
absl::Status RunRank(const TpEnv& env) {
  absl::StatusOr<std::shared_ptr<const NcclLib>> lib = LoadNccl();
  if (!lib.ok()) return lib.status();
  if (absl::Status s = Cuda(cudaSetDevice(env.local_rank), "cudaSetDevice(local rank)"); !s.ok()) {
    return s;
  }
  NcclUniqueId id{};
  if (env.rank == 0) {
    absl::StatusOr<NcclUniqueId> made = NcclGetUniqueId(**lib);
    if (!made.ok()) return made.status();
    id = *made;
  }
  if (absl::Status s = ExchangeUniqueId(env, id, absl::Seconds(60)); !s.ok()) return s;
  absl::StatusOr<std::unique_ptr<NcclComm>> comm =
      NcclComm::Init(*lib, env.rank, env.world_size, id);
  if (!comm.ok()) return comm.status();
  constexpr size_t kCount = 1 << 20, kChunk = 1000;
  std::vector<float> x(kCount), chunk(kChunk);
  for (size_t i = 0; i < kCount; ++i) x[i] = static_cast<float>((env.rank + 1) * (i % 89));
  for (size_t i = 0; i < kChunk; ++i) chunk[i] = static_cast<float>(env.rank * 100000 + i);
  float *dx = nullptr, *dchunk = nullptr, *dall = nullptr;
  cudaStream_t stream = nullptr;
  absl::Status s = Cuda(cudaMalloc(reinterpret_cast<void**>(&dx), kCount * 4), "cudaMalloc");
  if (s.ok()) s = Cuda(cudaMalloc(reinterpret_cast<void**>(&dchunk), kChunk * 4), "cudaMalloc");
  if (s.ok())
    s = Cuda(cudaMalloc(reinterpret_cast<void**>(&dall), env.world_size * kChunk * 4),
             "cudaMalloc");
  if (s.ok()) s = Cuda(cudaStreamCreate(&stream), "cudaStreamCreate");
  if (s.ok()) s = Cuda(cudaMemcpy(dx, x.data(), kCount * 4, cudaMemcpyHostToDevice), "cudaMemcpy");
  if (s.ok()) {
    s = Cuda(cudaMemcpy(dchunk, chunk.data(), kChunk * 4, cudaMemcpyHostToDevice), "cudaMemcpy");
  }
  if (s.ok()) s = (*comm)->AllReduceSumF32(dx, dx, kCount, stream);
  if (s.ok()) s = (*comm)->AllGatherF32(dchunk, dall, kChunk, stream);
  if (s.ok()) s = Cuda(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
  if (s.ok()) s = (*comm)->AsyncError();
  std::vector<float> all(env.world_size * kChunk);
  if (s.ok()) s = Cuda(cudaMemcpy(x.data(), dx, kCount * 4, cudaMemcpyDeviceToHost), "cudaMemcpy");
  if (s.ok()) {
    s = Cuda(cudaMemcpy(all.data(), dall, all.size() * 4, cudaMemcpyDeviceToHost), "cudaMemcpy");
  }
  if (s.ok()) {
    // sum over ranks q of (q + 1) * (i % 89) = (i % 89) * world * (world + 1) / 2
    const float w = static_cast<float>(env.world_size * (env.world_size + 1) / 2);
    for (size_t i = 0; i < kCount && s.ok(); ++i) {
      const float expect = w * static_cast<float>(i % 89);
      if (x[i] != expect) {
        s = absl::InternalError(
            absl::StrCat("all-reduce: element ", i, " is ", x[i], ", expected ", expect));
      }
    }
    for (int q = 0; q < env.world_size && s.ok(); ++q) {
      for (size_t i = 0; i < kChunk && s.ok(); ++i) {
        const float expect = static_cast<float>(q * 100000 + i);
        if (all[q * kChunk + i] != expect) {
          s = absl::InternalError(absl::StrCat("all-gather: rank ", q, "'s element ", i, " is ",
                                               all[q * kChunk + i], ", expected ", expect));
        }
      }
    }
  }
  cudaFree(dx);
  cudaFree(dchunk);
  cudaFree(dall);
  if (stream != nullptr) cudaStreamDestroy(stream);
  if (!s.ok()) {
    (void)(*comm)->Abort();
    return s;
  }
  if (absl::Status d = (*comm)->Destroy(); !d.ok()) return d;
  std::printf(
      "rank %d of %d (GPU %d, %s): all-reduce of %zu floats and all-gather of %zu per rank "
      "exact\n",
      env.rank, env.world_size, env.local_rank, NcclDescribe(**lib).c_str(), kCount, kChunk);
  return absl::OkStatus();
}

int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    if (fd >= 0) close(fd);
    return 29500;
  }
  close(fd);
  return ntohs(a.sin_port);
}

// Starts `n` copies of this program as ranks 0 .. n-1 on this host.
int Launch(const char* self, int n) {
  if (absl::Status s = NcclAvailable(); !s.ok()) {
    std::fprintf(stderr, "vibrant_tp_probe: skipped: %s\n", std::string(s.message()).c_str());
    return kSkip;
  }
  int gpus = 0;
  if (absl::Status s = CudaDeviceAvailable(); !s.ok()) {
    std::fprintf(stderr, "vibrant_tp_probe: skipped: needs %d GPUs: %s\n", n,
                 std::string(s.message()).c_str());
    return kSkip;
  }
  if (cudaGetDeviceCount(&gpus) != cudaSuccess || gpus < n) {
    std::fprintf(stderr, "vibrant_tp_probe: skipped: needs %d GPUs, found %d\n", n, gpus);
    return kSkip;
  }
  const std::string addr = absl::StrCat("127.0.0.1:", FreePort());
  // Every child's environment is built before fork (the CUDA runtime has
  // threads: between fork and exec only async-signal-safe calls).
  std::vector<std::vector<std::string>> envs(n);
  for (int r = 0; r < n; ++r) {
    for (char** e = environ; *e != nullptr; ++e) {
      if (std::strncmp(*e, "VIBRANT_TP_", 11) != 0) envs[r].push_back(*e);
    }
    envs[r].push_back(absl::StrCat("VIBRANT_TP_RANK=", r));
    envs[r].push_back(absl::StrCat("VIBRANT_TP_WORLD_SIZE=", n));
    envs[r].push_back(absl::StrCat("VIBRANT_TP_LOCAL_RANK=", r));
    envs[r].push_back(absl::StrCat("VIBRANT_TP_ADDR=", addr));
  }
  std::vector<std::vector<char*>> envps(n);
  for (int r = 0; r < n; ++r) {
    for (std::string& e : envs[r]) envps[r].push_back(e.data());
    envps[r].push_back(nullptr);
  }
  char* const argv[] = {const_cast<char*>(self), nullptr};
  std::vector<pid_t> pids;
  for (int r = 0; r < n; ++r) {
    const pid_t pid = fork();
    if (pid == 0) {
      execve("/proc/self/exe", argv, envps[r].data());
      _exit(127);
    }
    if (pid < 0) {
      std::fprintf(stderr, "vibrant_tp_probe: fork: %s\n", std::strerror(errno));
      for (pid_t p : pids) kill(p, SIGKILL);
      for (pid_t p : pids) waitpid(p, nullptr, 0);
      return 1;
    }
    pids.push_back(pid);
  }
  // Each rank bounds its own bootstrap (60 s); NCCL's init and collectives
  // have no deadline of ours, so the launcher gives up after 180 s.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(180);
  int failed = 0;
  for (int r = 0; r < n; ++r) {
    int st = 0;
    pid_t w = 0;
    while ((w = waitpid(pids[r], &st, WNOHANG)) == 0 &&
           std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    if (w == 0) {
      for (pid_t p : pids) kill(p, SIGKILL);
      waitpid(pids[r], &st, 0);
      std::fprintf(stderr, "vibrant_tp_probe: rank %d still ran after 180 s; killed all ranks\n",
                   r);
      ++failed;
      continue;
    }
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
      std::fprintf(stderr, "vibrant_tp_probe: rank %d failed (status %d)\n", r, st);
      ++failed;
    }
  }
  if (failed != 0) return 1;
  std::printf("vibrant_tp_probe: %d ranks on this host passed\n", n);
  return 0;
}

}  // namespace
}  // namespace vibrant

int main(int argc, char** argv) {
  if (argc == 3 && std::strcmp(argv[1], "--launch") == 0) {
    const int n = std::atoi(argv[2]);
    if (n < 1 || n > 64) {
      std::fprintf(stderr, "vibrant_tp_probe: --launch N needs 1 <= N <= 64, got '%s'\n", argv[2]);
      return 2;
    }
    return vibrant::Launch(argv[0], n);
  }
  if (argc != 1) {
    std::fprintf(stderr, "usage: vibrant_tp_probe [--launch N]\n");
    return 2;
  }
  absl::StatusOr<vibrant::TpEnv> env = vibrant::TpEnvFromEnvironment();
  if (!env.ok()) {
    std::fprintf(stderr, "vibrant_tp_probe: %s\n", std::string(env.status().message()).c_str());
    return 2;
  }
  absl::Status s = vibrant::RunRank(*env);
  if (!s.ok()) {
    std::fprintf(stderr, "vibrant_tp_probe: rank %d of %d: %s\n", env->rank, env->world_size,
                 s.ToString().c_str());
    return 1;
  }
  return 0;
}
