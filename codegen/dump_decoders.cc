// Writes the generated block decoders (codegen/kernels/decoders.cc, every
// type) to a file, so that decoders_host_test can compile them as host C++.
#include <cstdio>
#include <vector>

#include "codegen/kernels/families.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: codegen_dump_decoders OUT.inc\n");
    return 2;
  }
  std::vector<vibrant::DType> types;
  int n = 0;
  const vibrant::DTypeInfo* all = vibrant::AllDTypes(&n);
  for (int i = 0; i < n; ++i) {
    if (vibrant::codegen::CudaSupportsWeightType(all[i].type)) types.push_back(all[i].type);
  }
  const std::string src = vibrant::codegen::DecodersSource(types);
  FILE* f = std::fopen(argv[1], "wb");
  if (f == nullptr || std::fwrite(src.data(), 1, src.size(), f) != src.size() || std::fclose(f) != 0) {
    std::fprintf(stderr, "codegen_dump_decoders: cannot write %s\n", argv[1]);
    return 1;
  }
  return 0;
}
