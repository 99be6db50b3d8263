// Writes the device code of the tensor-core GEMM on quantized weights
// (codegen/kernels/mmq.cc: helpers, per-type decoders, the kernel template;
// no entry points) to a file, so that codegen/mmq_host_test.cc can compile it
// as host C++ and run it on the SIMT emulator.
#include <cstdio>
#include <string>

#include "codegen/kernels/families.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: codegen_dump_mmq MMQ.inc\n");
    return 2;
  }
  namespace cg = vibrant::codegen;
  using vibrant::DType;
  const std::string src = "#define VB_MMQ_HOST_EMULATION 1\n" + cg::MmqCommonSource() +
                          cg::MmqTypesSource({DType::kQ4_0, DType::kQ8_0, DType::kQ4_K, DType::kQ5_K,
                                              DType::kQ6_K}) +
                          cg::MmqMainSource();
  FILE* f = std::fopen(argv[1], "wb");
  if (f == nullptr || std::fwrite(src.data(), 1, src.size(), f) != src.size() || std::fclose(f) != 0) {
    std::fprintf(stderr, "codegen_dump_mmq: cannot write %s\n", argv[1]);
    return 1;
  }
  return 0;
}
