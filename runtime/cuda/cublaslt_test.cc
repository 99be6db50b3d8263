// The dlopen'ed cuBLASLt wrapper: clear errors when the library is missing
// (no GPU needed), and on a GPU the row-major layout against products
// computed by hand-written loops on small integer matrices (exact in f16 and
// f32, so the comparison is exact).
#include "runtime/cuda/cublaslt.h"

#include <cuda_runtime_api.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/cpu/dequantize.h"
#include "runtime/cuda/device.h"

namespace vibrant {
namespace {

using ::testing::HasSubstr;

TEST(CublasLtLoad, MissingLibraryIsUnavailableAndNamesTheFile) {
  auto lib = LoadCublasLt({"libvibrant_no_such_cublasLt.so.99", "/nonexistent/libcublasLt.so"});
  ASSERT_FALSE(lib.ok());
  EXPECT_EQ(lib.status().code(), absl::StatusCode::kUnavailable);
  const std::string msg(lib.status().message());
  EXPECT_THAT(msg, HasSubstr("cuBLASLt is not available"));
  EXPECT_THAT(msg, HasSubstr("libvibrant_no_such_cublasLt.so.99"));
  EXPECT_THAT(msg, HasSubstr("/nonexistent/libcublasLt.so"));
}

TEST(CublasLtLoad, NoNamesIsUnavailable) {
  auto lib = LoadCublasLt(std::vector<std::string>{});
  ASSERT_FALSE(lib.ok());
  EXPECT_EQ(lib.status().code(), absl::StatusCode::kUnavailable);
}

TEST(CublasLtLoad, ALibraryWithoutTheEntryPointsIsUnavailable) {
  // libm loads everywhere and has none of cuBLASLt's symbols.
  auto lib = LoadCublasLt({"libm.so.6"});
  ASSERT_FALSE(lib.ok());
  EXPECT_EQ(lib.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(lib.status().message()), HasSubstr("lacks cublasLtCreate"));
}

TEST(CublasLtLoad, TheDefaultNamesLoadWhereTheToolkitIs) {
  // Not a GPU test: dlopen + dlsym only.
  auto lib = LoadCublasLt();
  if (!lib.ok()) GTEST_SKIP() << "no libcublasLt on this machine: " << lib.status().message();
  EXPECT_THAT(CublasLtDescribe(**lib), HasSubstr("libcublasLt"));
  EXPECT_TRUE(CublasLtAvailable().ok());
}

TEST(PointerAlignment, IsTheLargestPowerOfTwoUpTo256) {
  auto p = [](uintptr_t a) { return reinterpret_cast<const void*>(a); };
  EXPECT_EQ(PointerAlignment(p(0x1000)), 256u);
  EXPECT_EQ(PointerAlignment(p(0x1080)), 128u);
  EXPECT_EQ(PointerAlignment(p(0x1004)), 4u);
  EXPECT_EQ(PointerAlignment(p(0x1002)), 2u);
  EXPECT_EQ(PointerAlignment(p(0x1001)), 1u);
}

// ---- GPU ---------------------------------------------------------------------------

#define SKIP_WITHOUT_GPU_OR_CUBLASLT()                                                   \
  do {                                                                                   \
    absl::Status _gpu = CudaDeviceAvailable();                                           \
    if (!_gpu.ok()) GTEST_SKIP() << "no usable CUDA GPU: " << _gpu.message();            \
    absl::Status _lt = CublasLtAvailable();                                              \
    if (!_lt.ok()) GTEST_SKIP() << _lt.message();                                        \
  } while (0)

template <class T>
T* Upload(const std::vector<T>& v) {
  void* p = nullptr;
  EXPECT_EQ(cudaMalloc(&p, v.size() * sizeof(T) + 256), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(p, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  return static_cast<T*>(p);
}

// a[M, K] (row stride lda) and b[N, K] (row stride ldb) of small integers, so
// that every product and sum is exact; out[M, ldo] starts as -7 everywhere,
// so that columns outside [0, N) must keep it.
void CheckGemm(int64_t M, int64_t N, int64_t K, int64_t lda, int64_t ldb, int64_t ldo,
               bool with_bias) {
  SCOPED_TRACE(::testing::Message() << "M=" << M << " N=" << N << " K=" << K << " lda=" << lda
                                    << " ldb=" << ldb << " ldo=" << ldo << " bias=" << with_bias);
  std::vector<float> af(M * lda, 0), bf(N * ldb, 0), bias(N);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t k = 0; k < K; ++k) af[m * lda + k] = static_cast<float>((m * 3 + k * 5) % 7 - 3);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < K; ++k) bf[n * ldb + k] = static_cast<float>((n * 2 + k) % 5 - 2);
  for (int64_t n = 0; n < N; ++n) bias[n] = static_cast<float>(100 * (n + 1));
  std::vector<uint16_t> ah(af.size()), bh(bf.size());
  for (size_t i = 0; i < af.size(); ++i) ah[i] = FloatToHalf(af[i]);
  for (size_t i = 0; i < bf.size(); ++i) bh[i] = FloatToHalf(bf[i]);
  std::vector<float> out(M * ldo, -7.0f);
  uint16_t* da = Upload(ah);
  uint16_t* db = Upload(bh);
  float* dbias = Upload(bias);
  float* dout = Upload(out);

  auto lib = LoadCublasLt();
  ASSERT_TRUE(lib.ok()) << lib.status();
  auto gemm = RowMajorGemm::Create(*lib, 4 << 20);
  ASSERT_TRUE(gemm.ok()) << gemm.status();
  GemmShape s;
  s.M = M;
  s.N = N;
  s.K = K;
  s.lda = lda;
  s.ldb = ldb;
  s.ldo = ldo;
  s.bias = with_bias;
  absl::Status st = (*gemm)->Run(s, da, db, with_bias ? dbias : nullptr, dout, nullptr);
  ASSERT_TRUE(st.ok()) << st;
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(out.data(), dout, out.size() * 4, cudaMemcpyDeviceToHost), cudaSuccess);
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t n = 0; n < ldo; ++n) {
      float expect = -7.0f;
      if (n < N) {
        expect = with_bias ? bias[n] : 0.0f;
        for (int64_t k = 0; k < K; ++k) expect += af[m * lda + k] * bf[n * ldb + k];
      }
      ASSERT_EQ(out[m * ldo + n], expect) << "out[" << m << ", " << n << "]";
    }
  }
  cudaFree(da);
  cudaFree(db);
  cudaFree(dbias);
  cudaFree(dout);
}

TEST(RowMajorGemm, MatchesHandComputedProducts) {
  SKIP_WITHOUT_GPU_OR_CUBLASLT();
  CheckGemm(3, 5, 8, 8, 8, 5, false);      // tiny, every dimension distinct
  CheckGemm(3, 5, 8, 8, 8, 5, true);
  CheckGemm(40, 64, 32, 32, 32, 96, false);  // a column range of a wider out
  CheckGemm(40, 64, 32, 32, 32, 96, true);
  CheckGemm(33, 130, 256, 256, 256, 130, true);
  CheckGemm(17, 24, 40, 48, 40, 24, false);  // a's rows padded
}

TEST(RowMajorGemm, BadShapesFailWithTheShape) {
  SKIP_WITHOUT_GPU_OR_CUBLASLT();
  auto lib = LoadCublasLt();
  ASSERT_TRUE(lib.ok());
  auto gemm = RowMajorGemm::Create(*lib, 0);
  ASSERT_TRUE(gemm.ok()) << gemm.status();
  GemmShape s;
  s.M = 4;
  s.N = 4;
  s.K = 16;
  s.lda = 8;  // < K
  s.ldb = 16;
  s.ldo = 4;
  absl::Status st = (*gemm)->Prepare(s);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(st.message()), HasSubstr("lda=8"));
}

}  // namespace
}  // namespace vibrant
