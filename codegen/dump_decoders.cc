// Writes the generated block decoders (codegen/kernels/decoders.cc, every
// type) and, optionally, the q8 mat-vec dot products (matvec_q8.cc) and the
// MoE router's device functions (moe.cc) to files, so that the host tests can
// compile them as C++.
#include <cstdio>
#include <vector>

#include "codegen/kernels/families.h"

int main(int argc, char** argv) {
  if (argc < 2 || argc > 4) {
    std::fprintf(stderr,
                 "usage: codegen_dump_decoders DECODERS.inc [MATVEC_Q8_DOTS.inc [MOE_ROUTER.inc]]\n");
    return 2;
  }
  std::vector<vibrant::DType> types;
  int n = 0;
  const vibrant::DTypeInfo* all = vibrant::AllDTypes(&n);
  for (int i = 0; i < n; ++i) {
    if (vibrant::codegen::CudaSupportsWeightType(all[i].type)) types.push_back(all[i].type);
  }
  for (int i = 1; i < argc; ++i) {
    const std::string src = i == 1   ? vibrant::codegen::DecodersSource(types)
                            : i == 2 ? vibrant::codegen::MatvecQ8DotSource(types)
                                     : vibrant::codegen::MoeRouterSource();
    FILE* f = std::fopen(argv[i], "wb");
    if (f == nullptr || std::fwrite(src.data(), 1, src.size(), f) != src.size() ||
        std::fclose(f) != 0) {
      std::fprintf(stderr, "codegen_dump_decoders: cannot write %s\n", argv[i]);
      return 1;
    }
  }
  return 0;
}
