// Writes the tensor-core attention kernels' device code (the templates of
// codegen/kernels/attention_{common,decode,prefill}.cc, without entry points)
// and the kv_store kernels to a file, so that codegen/attention_host_test.cc
// can compile them as host C++ and run them on the SIMT emulator.
#include <cstdio>
#include <string>

#include "codegen/kernels/attention_mma.h"
#include "codegen/kernels/families.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: codegen_dump_attention ATTENTION.inc\n");
    return 2;
  }
  namespace cg = vibrant::codegen;
  const std::string src = "#define VB_ATTN_HOST_EMULATION 1\n" + cg::AttnCommonSource() +
                          cg::AttnDecodeSource() + cg::AttnPrefillSource() + cg::KvStoreSource();
  FILE* f = std::fopen(argv[1], "wb");
  if (f == nullptr || std::fwrite(src.data(), 1, src.size(), f) != src.size() ||
      std::fclose(f) != 0) {
    std::fprintf(stderr, "codegen_dump_attention: cannot write %s\n", argv[1]);
    return 1;
  }
  return 0;
}
