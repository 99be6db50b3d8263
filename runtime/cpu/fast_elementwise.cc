#include "runtime/cpu/fast_elementwise.h"

#include <cmath>

#include "runtime/cpu/cpu_features.h"
#include "runtime/cpu/fast_math.h"

namespace vibrant::cpu {
namespace {

inline float SiluOne(float x) {
  const float e = internal::ExpPortable(-std::fabs(x));
  const float s = x >= 0.0f ? 1.0f / (1.0f + e) : e / (1.0f + e);
  return x * s;
}

#ifdef VB_FAST_MATH_X86
__attribute__((target("avx2,fma,f16c"))) void SiluAvx2(const float* x, int64_t n, float* out) {
  const __m256 sign = _mm256_set1_ps(-0.0f), one = _mm256_set1_ps(1.0f);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    const __m256 e = internal::ExpAvx2(_mm256_or_ps(v, sign));  // -|x|
    const __m256 num = _mm256_blendv_ps(one, e, _mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_LT_OQ));
    _mm256_storeu_ps(out + i, _mm256_mul_ps(v, _mm256_div_ps(num, _mm256_add_ps(one, e))));
  }
  for (; i < n; ++i) out[i] = SiluOne(x[i]);
}
#endif

}  // namespace

void SiluFast(const float* x, int64_t n, float* out) {
#ifdef VB_FAST_MATH_X86
  if (ActiveIsa() >= Isa::kAvx2) {
    SiluAvx2(x, n, out);
    return;
  }
#endif
  for (int64_t i = 0; i < n; ++i) out[i] = SiluOne(x[i]);
}

}  // namespace vibrant::cpu
