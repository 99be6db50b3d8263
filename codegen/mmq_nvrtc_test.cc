// NVRTC compiles of the tensor-core GEMM on quantized weights (kernels/mmq.cc)
// for every type it serves and both tile heights, with ptxas's resource
// report: no spills and no stack frame (a spilled accumulator or raw-weight
// array would put the main loop on local memory), at most 255 registers.
// Needs libnvrtc, no GPU: runs in CI. It also writes the SASS-free facts the
// lead needs before a device run: registers per thread, hence blocks per SM.
#include <map>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "codegen/kernel_source.h"
#include "codegen/kernels/families.h"
#include "codegen/nvrtc.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vibrant::codegen {
namespace {

using ::testing::HasSubstr;

struct Resources {
  int registers = -1;
  int stack = -1, spill_stores = -1, spill_loads = -1;
};

std::map<std::string, Resources> ParsePtxasLog(const std::string& log) {
  std::map<std::string, Resources> out;
  std::istringstream in(log);
  std::string line, cur;
  const std::regex entry(R"(Compiling entry function '([A-Za-z0-9_]+)')");
  const std::regex frame(R"((\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads)");
  const std::regex used(R"(Used (\d+) registers)");
  std::smatch m;
  while (std::getline(in, line)) {
    if (std::regex_search(line, m, entry)) {
      cur = m[1];
      out[cur];
    } else if (!cur.empty() && std::regex_search(line, m, frame)) {
      out[cur].stack = std::stoi(m[1]);
      out[cur].spill_stores = std::stoi(m[2]);
      out[cur].spill_loads = std::stoi(m[3]);
    } else if (!cur.empty() && std::regex_search(line, m, used)) {
      out[cur].registers = std::stoi(m[1]);
    }
  }
  return out;
}

const DType kTypes[] = {DType::kQ4_0, DType::kQ8_0, DType::kQ4_K, DType::kQ5_K, DType::kQ6_K};

TEST(NvrtcMmq, EveryTypeCompilesWithoutSpills) {
  const std::string src =
      WithGridDependency(PreludeSource() + MmqSource(std::vector<DType>(std::begin(kTypes), std::end(kTypes))));
  NvrtcOptions opts;
  opts.arch = "sm_90";
  opts.use_cache = false;
  opts.extra_options = {"--ptxas-options=-v"};
  std::string log;
  opts.info_log = &log;
  auto b = CompileCuda(src, "mmq.cu", opts);
  ASSERT_TRUE(b.ok()) << b.status();
  const std::map<std::string, Resources> res = ParsePtxasLog(log);
  for (DType t : kTypes) {
    ASSERT_TRUE(MmqSupports(t)) << DTypeName(t);
    for (int bm : {64, 128}) {
      const std::string n = MmqKernelName(t, bm);
      EXPECT_THAT(b->ptx, HasSubstr(".entry " + n + "(")) << n;
      auto it = res.find(n);
      ASSERT_NE(it, res.end()) << n << " not in the ptxas report:\n" << log;
      const Resources& r = it->second;
      std::printf("[ MEASURED ] %s: %d registers, stack %d, spills %d/%d, %d bytes dynamic smem\n",
                  n.c_str(), r.registers, r.stack, r.spill_stores, r.spill_loads, MmqSharedBytes(bm));
      EXPECT_EQ(r.spill_stores, 0) << n;
      EXPECT_EQ(r.spill_loads, 0) << n;
      EXPECT_EQ(r.stack, 0) << n;
      EXPECT_GT(r.registers, 0) << n;
      EXPECT_LE(MmqSharedBytes(bm), 227 * 1024) << n;
    }
  }
  EXPECT_FALSE(MmqSupports(DType::kF16));
  EXPECT_FALSE(MmqSupports(DType::kQ2_K));
  EXPECT_EQ(MmqSource({DType::kF16}), "");
}

// The kernels of a module for a GPU without mma.sync f16 (sm_75) trap.
TEST(NvrtcMmq, CompilesForOlderGpus) {
  NvrtcOptions opts;
  opts.arch = "sm_75";
  opts.use_cache = false;
  auto b = CompileCuda(PreludeSource() + MmqSource({DType::kQ4_K}), "mmq.cu", opts);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_THAT(b->ptx, HasSubstr(".entry vb_mmq_q4_K_m128("));
  EXPECT_THAT(b->ptx, HasSubstr("trap"));
}

}  // namespace
}  // namespace vibrant::codegen
