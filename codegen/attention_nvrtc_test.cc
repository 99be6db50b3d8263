// NVRTC compiles of the tensor-core attention kernels (attention_mma.h) for
// every cache-type pair and head size, with ptxas's resource report: no
// spills, no stack frame (a spilled fragment array would put the kernel on
// local memory), shared memory within the static 48 KB. Needs libnvrtc, no
// GPU: runs in CI.
#include <map>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "codegen/kernel_source.h"
#include "codegen/kernels/attention_mma.h"
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
  int smem = 0;
};

// ptxas -v, per entry function:
//   ptxas info    : Compiling entry function 'NAME' for 'sm_90'
//   ptxas info    : Function properties for NAME
//       S bytes stack frame, X bytes spill stores, Y bytes spill loads
//   ptxas info    : Used N registers, used 1 barriers, B bytes smem, ...
std::map<std::string, Resources> ParsePtxasLog(const std::string& log) {
  std::map<std::string, Resources> out;
  std::istringstream in(log);
  std::string line, cur;
  const std::regex entry(R"(Compiling entry function '([A-Za-z0-9_]+)')");
  const std::regex frame(R"((\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads)");
  const std::regex used(R"(Used (\d+) registers)");
  const std::regex smem(R"((\d+) bytes smem)");
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
      if (std::regex_search(line, m, smem)) out[cur].smem = std::stoi(m[1]);
    }
  }
  return out;
}

std::vector<AttnConfig> EveryConfig() {
  std::vector<AttnConfig> all;
  for (DType k : {DType::kF32, DType::kF16, DType::kQ8_0}) {
    for (DType v : {DType::kF32, DType::kF16, DType::kQ8_0}) {
      for (int hd : {64, 128}) all.push_back(AttnConfig{k, v, hd});
    }
  }
  return all;
}

TEST(NvrtcAttention, EveryConfigCompilesWithoutSpills) {
  const std::vector<AttnConfig> all = EveryConfig();
  const std::string src = WithGridDependency(PreludeSource() + KvStoreSource() +
                                             AttentionMmaSource(all));
  NvrtcOptions opts;
  opts.arch = "sm_90";
  opts.use_cache = false;
  opts.extra_options = {"--ptxas-options=-v"};
  std::string log;
  opts.info_log = &log;
  auto b = CompileCuda(src, "attention.cu", opts);
  ASSERT_TRUE(b.ok()) << b.status();
  const std::map<std::string, Resources> res = ParsePtxasLog(log);
  std::vector<std::string> names = {kAttnDecodeCombineKernel, "vb_kv_store_q8_0"};
  for (const AttnConfig& c : all) {
    names.push_back(AttnDecodeKernelName(c));
    names.push_back(AttnPrefillKernelName(c));
  }
  for (const std::string& n : names) {
    EXPECT_THAT(b->ptx, HasSubstr(".entry " + n + "(")) << n;
    auto it = res.find(n);
    ASSERT_NE(it, res.end()) << n << " not in the ptxas report:\n" << log;
    const Resources& r = it->second;
    std::printf("[ MEASURED ] %s: %d registers, %d bytes smem, stack %d, spills %d/%d\n",
                n.c_str(), r.registers, r.smem, r.stack, r.spill_stores, r.spill_loads);
    EXPECT_EQ(r.spill_stores, 0) << n;
    EXPECT_EQ(r.spill_loads, 0) << n;
    EXPECT_EQ(r.stack, 0) << n;
    EXPECT_GT(r.registers, 0) << n;
    EXPECT_LE(r.smem, 48 * 1024) << n;
  }
}

// The module compiles for GPUs without mma.sync f16 (sm_75): the kernels
// trap there instead of breaking the whole module.
TEST(NvrtcAttention, CompilesForOlderGpus) {
  NvrtcOptions opts;
  opts.arch = "sm_75";
  opts.use_cache = false;
  const std::string src =
      PreludeSource() + AttentionMmaSource({AttnConfig{DType::kF16, DType::kF16, 128}});
  auto b = CompileCuda(src, "attention.cu", opts);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_THAT(b->ptx, HasSubstr(".entry vb_attn_dec_f16_f16_hd128("));
  EXPECT_THAT(b->ptx, HasSubstr("trap"));
}

}  // namespace
}  // namespace vibrant::codegen
