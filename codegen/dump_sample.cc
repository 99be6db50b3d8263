// Writes the sampler's CUDA source (codegen/kernels/sample.cc) to a file, so
// that the host test (sample_host_test.cc) can compile it as C++.
#include <cstdio>
#include <string>

#include "codegen/kernels/families.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: codegen_dump_sample SAMPLE.inc\n");
    return 2;
  }
  const std::string src = vibrant::codegen::SampleSource();
  FILE* f = std::fopen(argv[1], "wb");
  if (f == nullptr || std::fwrite(src.data(), 1, src.size(), f) != src.size() || std::fclose(f) != 0) {
    std::fprintf(stderr, "codegen_dump_sample: cannot write %s\n", argv[1]);
    return 1;
  }
  return 0;
}
