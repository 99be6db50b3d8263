// The dlopen'ed NCCL wrapper. Without a GPU: clear errors when the library is
// missing or wrong, the installed library's version, ncclGetUniqueId (which
// needs no GPU), the vendored ABI (nccl_abi.h) against <nccl.h> where that
// header exists. With 2 or more GPUs: all-reduce and all-gather across them,
// one thread per GPU as one process per GPU would do, against sums and
// concatenations of small integers (exact in f32).
#include "runtime/cuda/nccl.h"

#include <cuda_runtime_api.h>

#include <cstdlib>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/cuda/device.h"
#include "runtime/cuda/nccl_abi.h"

#if __has_include(<nccl.h>)
#include <nccl.h>
#define VIBRANT_HAVE_NCCL_HEADER 1
#endif

namespace vibrant {
namespace {

using ::testing::HasSubstr;

#ifdef VIBRANT_HAVE_NCCL_HEADER
// Maps <nccl.h>'s types onto nccl_abi.h's, so that a function's type from the
// header can be compared with the pointer type nccl.cc calls it through.
template <class T>
struct Abi {
  using type = T;
};
template <>
struct Abi<ncclResult_t> {
  using type = nccl_abi::Result;
};
template <>
struct Abi<ncclResult_t*> {
  using type = nccl_abi::Result*;
};
template <>
struct Abi<ncclComm_t> {
  using type = nccl_abi::comm_t;
};
template <>
struct Abi<ncclComm_t*> {
  using type = nccl_abi::comm_t*;
};
template <>
struct Abi<ncclUniqueId> {
  using type = nccl_abi::UniqueId;
};
template <>
struct Abi<ncclUniqueId*> {
  using type = nccl_abi::UniqueId*;
};
template <>
struct Abi<ncclDataType_t> {
  using type = nccl_abi::DataType;
};
template <>
struct Abi<ncclRedOp_t> {
  using type = nccl_abi::RedOp;
};
template <class R, class... A>
struct Abi<R (*)(A...)> {
  using type = typename Abi<R>::type (*)(typename Abi<A>::type...);
};
template <class F, class G>
constexpr bool kSameAbi = std::is_same_v<typename Abi<F>::type, G>;

static_assert(kSameAbi<decltype(&::ncclGetVersion), nccl_abi::GetVersionFn>);
static_assert(kSameAbi<decltype(&::ncclGetUniqueId), nccl_abi::GetUniqueIdFn>);
static_assert(kSameAbi<decltype(&::ncclCommInitRank), nccl_abi::CommInitRankFn>);
static_assert(kSameAbi<decltype(&::ncclCommDestroy), nccl_abi::CommDestroyFn>);
static_assert(kSameAbi<decltype(&::ncclCommAbort), nccl_abi::CommAbortFn>);
static_assert(kSameAbi<decltype(&::ncclCommGetAsyncError), nccl_abi::CommGetAsyncErrorFn>);
static_assert(kSameAbi<decltype(&::ncclGetErrorString), nccl_abi::GetErrorStringFn>);
static_assert(kSameAbi<decltype(&::ncclGetLastError), nccl_abi::GetLastErrorFn>);
static_assert(kSameAbi<decltype(&::ncclAllReduce), nccl_abi::AllReduceFn>);
static_assert(kSameAbi<decltype(&::ncclAllGather), nccl_abi::AllGatherFn>);
static_assert(kSameAbi<decltype(&::ncclGroupStart), nccl_abi::GroupStartFn>);
static_assert(kSameAbi<decltype(&::ncclGroupEnd), nccl_abi::GroupEndFn>);
static_assert(sizeof(ncclUniqueId) == sizeof(nccl_abi::UniqueId));
static_assert(NCCL_UNIQUE_ID_BYTES == nccl_abi::kUniqueIdBytes);
static_assert(sizeof(ncclResult_t) == sizeof(nccl_abi::Result));
static_assert(sizeof(ncclDataType_t) == sizeof(nccl_abi::DataType));
static_assert(sizeof(ncclRedOp_t) == sizeof(nccl_abi::RedOp));
static_assert(static_cast<int>(ncclSuccess) == nccl_abi::kSuccess);
static_assert(static_cast<int>(ncclUnhandledCudaError) == nccl_abi::kUnhandledCudaError);
static_assert(static_cast<int>(ncclSystemError) == nccl_abi::kSystemError);
static_assert(static_cast<int>(ncclInternalError) == nccl_abi::kInternalError);
static_assert(static_cast<int>(ncclInvalidArgument) == nccl_abi::kInvalidArgument);
static_assert(static_cast<int>(ncclInvalidUsage) == nccl_abi::kInvalidUsage);
static_assert(static_cast<int>(ncclRemoteError) == nccl_abi::kRemoteError);
static_assert(static_cast<int>(ncclInProgress) == nccl_abi::kInProgress);
static_assert(static_cast<int>(ncclFloat32) == nccl_abi::kFloat32);
static_assert(static_cast<int>(ncclSum) == nccl_abi::kSum);
#endif

TEST(NcclAbi, MatchesTheHeader) {
#ifdef VIBRANT_HAVE_NCCL_HEADER
  // The static_asserts above compiled; this records that they were checked.
  SUCCEED() << "nccl_abi.h checked against <nccl.h> " << NCCL_MAJOR << "." << NCCL_MINOR << "."
            << NCCL_PATCH;
#else
  GTEST_SKIP() << "no <nccl.h> on this machine: nccl_abi.h was not checked against it";
#endif
}

TEST(NcclLoad, MissingLibraryIsNotFoundAndNamesTheFiles) {
  auto lib = LoadNccl({"libvibrant_no_such_nccl.so.2", "/nonexistent/libnccl.so.2"});
  ASSERT_FALSE(lib.ok());
  EXPECT_EQ(lib.status().code(), absl::StatusCode::kNotFound);
  const std::string msg(lib.status().message());
  EXPECT_THAT(msg, HasSubstr("NCCL is not available"));
  EXPECT_THAT(msg, HasSubstr("libvibrant_no_such_nccl.so.2"));
  EXPECT_THAT(msg, HasSubstr("/nonexistent/libnccl.so.2"));
  EXPECT_THAT(msg, HasSubstr("VIBRANT_NCCL_LIBRARY"));
}

TEST(NcclLoad, NoNamesIsNotFound) {
  auto lib = LoadNccl(std::vector<std::string>{});
  ASSERT_FALSE(lib.ok());
  EXPECT_EQ(lib.status().code(), absl::StatusCode::kNotFound);
}

TEST(NcclLoad, TheEnvironmentNamesTheOnlyFileTried) {
  const char* old = std::getenv("VIBRANT_NCCL_LIBRARY");
  const std::string saved = old != nullptr ? old : "";
  setenv("VIBRANT_NCCL_LIBRARY", "/nonexistent/dir/libnccl.so.2", 1);
  const std::vector<std::string> names = DefaultNcclNames();
  auto lib = LoadNccl(names);
  if (old != nullptr) {
    setenv("VIBRANT_NCCL_LIBRARY", saved.c_str(), 1);
  } else {
    unsetenv("VIBRANT_NCCL_LIBRARY");
  }
  EXPECT_THAT(names, ::testing::ElementsAre("/nonexistent/dir/libnccl.so.2"));
  ASSERT_FALSE(lib.ok());
  EXPECT_EQ(lib.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(lib.status().message()), HasSubstr("/nonexistent/dir/libnccl.so.2"));
}

TEST(NcclLoad, WithoutTheEnvironmentTheUsualNamesAreTried) {
  const char* old = std::getenv("VIBRANT_NCCL_LIBRARY");
  const std::string saved = old != nullptr ? old : "";
  unsetenv("VIBRANT_NCCL_LIBRARY");
  const std::vector<std::string> names = DefaultNcclNames();
  if (old != nullptr) setenv("VIBRANT_NCCL_LIBRARY", saved.c_str(), 1);
  ASSERT_GE(names.size(), 2u);
  EXPECT_EQ(names[0], "libnccl.so.2");
  EXPECT_EQ(names[1], "libnccl.so");
}

TEST(NcclLoad, ALibraryWithoutTheEntryPointsIsFailedPrecondition) {
  // libm loads everywhere and has none of NCCL's symbols.
  auto lib = LoadNccl({"libm.so.6"});
  ASSERT_FALSE(lib.ok());
  EXPECT_EQ(lib.status().code(), absl::StatusCode::kFailedPrecondition);
  const std::string msg(lib.status().message());
  EXPECT_THAT(msg, HasSubstr("libm.so.6 lacks ncclGetVersion"));
  EXPECT_THAT(msg, HasSubstr("ncclAllReduce"));
}

TEST(NcclVersionCode, DecodesBothSchemes) {
  // NCCL_VERSION(2, 28, 9) = 2 * 10000 + 28 * 100 + 9 (NCCL >= 2.9).
  NcclVersion v = DecodeNcclVersion(22809);
  EXPECT_EQ(v.major, 2);
  EXPECT_EQ(v.minor, 28);
  EXPECT_EQ(v.patch, 9);
  // NCCL_VERSION(2, 7, 8) = 2 * 1000 + 7 * 100 + 8 (before 2.9).
  v = DecodeNcclVersion(2708);
  EXPECT_EQ(v.major, 2);
  EXPECT_EQ(v.minor, 7);
  EXPECT_EQ(v.patch, 8);
}

#define SKIP_WITHOUT_NCCL()                                                          \
  do {                                                                               \
    absl::Status _nccl = NcclAvailable();                                            \
    if (!_nccl.ok()) GTEST_SKIP() << "no NCCL on this machine: " << _nccl.message(); \
  } while (0)

TEST(NcclLoad, TheDefaultLibraryLoadsAndReportsASaneVersion) {
  // Not a GPU test: dlopen, dlsym and ncclGetVersion.
  SKIP_WITHOUT_NCCL();
  auto lib = LoadNccl();
  ASSERT_TRUE(lib.ok()) << lib.status();
  const NcclVersion v = GetNcclVersion(**lib);
  EXPECT_EQ(v.major, 2);
  EXPECT_GE(v.minor, 4);
  EXPECT_LT(v.minor, 100);
  EXPECT_LT(v.patch, 100);
  const std::string desc = NcclDescribe(**lib);
  EXPECT_THAT(desc, HasSubstr("libnccl"));
  EXPECT_THAT(desc, HasSubstr("NCCL 2."));
  std::cout << "loaded " << desc << "\n";
}

TEST(NcclLoad, LoadingTurnsNvlinkMulticastOffUnlessTheUserSetIt) {
  SKIP_WITHOUT_NCCL();
  const char* old = std::getenv("NCCL_NVLS_ENABLE");
  const std::string saved = old != nullptr ? old : "";
  unsetenv("NCCL_NVLS_ENABLE");
  auto lib = LoadNccl(DefaultNcclNames());
  ASSERT_TRUE(lib.ok()) << lib.status();
  const char* now = std::getenv("NCCL_NVLS_ENABLE");
  ASSERT_NE(now, nullptr);
  EXPECT_STREQ(now, "0");
  setenv("NCCL_NVLS_ENABLE", "1", 1);  // an explicit choice is respected
  lib = LoadNccl(DefaultNcclNames());
  ASSERT_TRUE(lib.ok()) << lib.status();
  EXPECT_STREQ(std::getenv("NCCL_NVLS_ENABLE"), "1");
  if (old != nullptr) {
    setenv("NCCL_NVLS_ENABLE", saved.c_str(), 1);
  } else {
    setenv("NCCL_NVLS_ENABLE", "0", 1);  // as LoadNccl() left it for the other tests
  }
}

TEST(NcclUniqueIdTest, NeedsNoGpuAndIsFreshEachCall) {
  // ncclGetUniqueId works without a GPU (seen on a machine with none): it
  // picks a network interface and opens NCCL's bootstrap listener.
  SKIP_WITHOUT_NCCL();
  auto lib = LoadNccl();
  ASSERT_TRUE(lib.ok()) << lib.status();
  auto a = NcclGetUniqueId(**lib);
  ASSERT_TRUE(a.ok()) << a.status();
  auto b = NcclGetUniqueId(**lib);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_NE(*a, NcclUniqueId{});
  EXPECT_NE(*a, *b);
}

TEST(NcclCommTest, ARankOutsideTheWorldIsInvalidArgument) {
  SKIP_WITHOUT_NCCL();
  auto lib = LoadNccl();
  ASSERT_TRUE(lib.ok()) << lib.status();
  const NcclUniqueId id{};
  for (auto [rank, world] : {std::pair{2, 2}, std::pair{-1, 2}, std::pair{0, 0}}) {
    auto comm = NcclComm::Init(*lib, rank, world, id);
    ASSERT_FALSE(comm.ok());
    EXPECT_EQ(comm.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(comm.status().message()), HasSubstr("outside a world of size"));
  }
}

TEST(NcclCommNoGpu, InitFailsWithANamedError) {
  if (CudaDeviceAvailable().ok())
    GTEST_SKIP() << "a GPU is present; this test is for machines without one";
  SKIP_WITHOUT_NCCL();
  auto lib = LoadNccl();
  ASSERT_TRUE(lib.ok()) << lib.status();
  auto id = NcclGetUniqueId(**lib);
  ASSERT_TRUE(id.ok()) << id.status();
  auto comm = NcclComm::Init(*lib, 0, 1, *id);
  ASSERT_FALSE(comm.ok());
  EXPECT_THAT(std::string(comm.status().message()), HasSubstr("ncclCommInitRank failed"));
  std::cout << "without a GPU: " << comm.status() << "\n";
}

// ---- 2 or more GPUs --------------------------------------------------------------

// The number of CUDA GPUs, or a reason to skip.
absl::StatusOr<int> GpuCount() {
  if (absl::Status s = CudaDeviceAvailable(); !s.ok()) return s;
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return absl::FailedPreconditionError("cudaGetDeviceCount failed");
  }
  return n;
}

#define SKIP_WITHOUT_GPUS(need)                                                                   \
  do {                                                                                            \
    absl::StatusOr<int> _n = GpuCount();                                                          \
    if (!_n.ok())                                                                                 \
      GTEST_SKIP() << "needs " << (need) << " CUDA GPUs; none usable: " << _n.status().message(); \
    if (*_n < (need)) GTEST_SKIP() << "needs " << (need) << " CUDA GPUs, found " << *_n;          \
    SKIP_WITHOUT_NCCL();                                                                          \
  } while (0)

// One thread per GPU (as one process per GPU would): rank r on device r
// all-reduces r-dependent integers and all-gathers its own chunk.
void RunCollectives(int world) {
  SCOPED_TRACE(::testing::Message() << "world size " << world);
  auto lib = LoadNccl();
  ASSERT_TRUE(lib.ok()) << lib.status();
  auto id = NcclGetUniqueId(**lib);
  ASSERT_TRUE(id.ok()) << id.status();
  constexpr size_t kCount = 1000003;  // odd, > NCCL's chunk sizes
  constexpr size_t kChunk = 4099;
  std::vector<absl::Status> status(world);
  std::vector<std::vector<float>> reduced(world), gathered(world);
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      auto fail = [&](absl::Status s) { status[r] = s; };
      if (cudaSetDevice(r) != cudaSuccess) return fail(absl::InternalError("cudaSetDevice"));
      auto comm = NcclComm::Init(*lib, r, world, *id);
      if (!comm.ok()) return fail(comm.status());
      std::vector<float> x(kCount), chunk(kChunk);
      for (size_t i = 0; i < kCount; ++i) x[i] = static_cast<float>((r + 1) * (i % 97) - r);
      for (size_t i = 0; i < kChunk; ++i) chunk[i] = static_cast<float>(r * 10000 + i);
      float *dx = nullptr, *dchunk = nullptr, *dall = nullptr;
      cudaStream_t stream = nullptr;
      if (cudaMalloc(&dx, kCount * 4) != cudaSuccess ||
          cudaMalloc(&dchunk, kChunk * 4) != cudaSuccess ||
          cudaMalloc(&dall, world * kChunk * 4) != cudaSuccess ||
          cudaStreamCreate(&stream) != cudaSuccess) {
        return fail(absl::InternalError("cudaMalloc / cudaStreamCreate"));
      }
      cudaMemcpy(dx, x.data(), kCount * 4, cudaMemcpyHostToDevice);
      cudaMemcpy(dchunk, chunk.data(), kChunk * 4, cudaMemcpyHostToDevice);
      absl::Status s = (*comm)->AllReduceSumF32(dx, dx, kCount, stream);  // in place
      if (s.ok()) s = (*comm)->AllGatherF32(dchunk, dall, kChunk, stream);
      if (s.ok() && cudaStreamSynchronize(stream) != cudaSuccess) {
        s = absl::InternalError("cudaStreamSynchronize");
      }
      if (s.ok()) s = (*comm)->AsyncError();
      if (s.ok()) {
        reduced[r].resize(kCount);
        gathered[r].resize(world * kChunk);
        cudaMemcpy(reduced[r].data(), dx, kCount * 4, cudaMemcpyDeviceToHost);
        cudaMemcpy(gathered[r].data(), dall, world * kChunk * 4, cudaMemcpyDeviceToHost);
        s = (*comm)->Destroy();
      }
      cudaFree(dx);
      cudaFree(dchunk);
      cudaFree(dall);
      cudaStreamDestroy(stream);
      fail(s);
    });
  }
  for (std::thread& t : threads) t.join();
  for (int r = 0; r < world; ++r) {
    ASSERT_TRUE(status[r].ok()) << "rank " << r << ": " << status[r];
    for (size_t i = 0; i < kCount; ++i) {
      float expect = 0;
      for (int q = 0; q < world; ++q) expect += static_cast<float>((q + 1) * (i % 97) - q);
      ASSERT_EQ(reduced[r][i], expect) << "rank " << r << " all-reduce [" << i << "]";
    }
    for (int q = 0; q < world; ++q) {
      for (size_t i = 0; i < kChunk; ++i) {
        ASSERT_EQ(gathered[r][q * kChunk + i], static_cast<float>(q * 10000 + i))
            << "rank " << r << " all-gather chunk " << q << " [" << i << "]";
      }
    }
  }
}

TEST(NcclCommGpu, AllReduceAndAllGatherAcrossTwoGpus) {
  SKIP_WITHOUT_GPUS(2);
  RunCollectives(2);
}

TEST(NcclCommGpu, AllReduceAndAllGatherAcrossFourGpus) {
  SKIP_WITHOUT_GPUS(4);
  RunCollectives(4);
}

}  // namespace
}  // namespace vibrant
