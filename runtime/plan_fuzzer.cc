// libFuzzer target for the plan loader (built with -DVIBRANT_FUZZ=ON and
// clang; run by `.ci/fuzz.sh plan`), structure-aware: the custom mutator
// takes the plan apart into its sections (runtime/plan_edit.h), mutates one
// section's bytes (or its kind or flags, or drops or repeats a section, or,
// now and then, the raw file), and puts it back together with fresh
// checksums, so that mutations reach the parsers behind the checksums (the
// graph deserializer, the plan validation, the dispatch table, the embedded
// GGUF). Generic over section kinds: it never looks inside a section.
//
// Every input must either fail with a status or load into a graph that the
// CPU executor accepts or rejects cleanly; a plan with an embedded model is
// then run for one step. Crashes, sanitizer reports and broken invariants
// abort.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "frontends/gguf/gguf.h"
#include "ir/graph.h"
#include "runtime/backend.h"
#include "runtime/cpu/executor.h"
#include "runtime/dispatch.h"
#include "runtime/plan.h"
#include "runtime/plan_edit.h"
#include "runtime/plan_validate.h"
#include "runtime/program.h"

extern "C" size_t LLVMFuzzerMutate(uint8_t* data, size_t size, size_t max_size);

namespace {

using vibrant::RawPlanSection;

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "plan_fuzzer: invariant broken: %s\n", what);
    std::abort();
  }
}

uint32_t VersionOf(const uint8_t* data, size_t size) {
  if (size < 12) return vibrant::kPlanFormatVersion;
  return uint32_t{data[8]} | uint32_t{data[9]} << 8 | uint32_t{data[10]} << 16 |
         uint32_t{data[11]} << 24;
}

// Mutates `s` in place with libFuzzer's byte mutators, within `max` bytes.
void MutateBytes(std::string& s, size_t max) {
  if (s.empty()) s.push_back('\0');
  const size_t old = s.size();
  const size_t cap = std::max(old, std::min(max, old * 2 + 64));
  s.resize(cap);
  s.resize(LLVMFuzzerMutate(reinterpret_cast<uint8_t*>(s.data()), old, cap));
}

}  // namespace

extern "C" size_t LLVMFuzzerCustomMutator(uint8_t* data, size_t size, size_t max_size,
                                          unsigned int seed) {
  std::mt19937 rng(seed);
  absl::StatusOr<std::vector<RawPlanSection>> sections =
      vibrant::SplitPlanSections(absl::Span<const uint8_t>(data, size));
  if (!sections.ok() || sections->empty() || rng() % 16 == 0) {
    return LLVMFuzzerMutate(data, size, max_size);  // the container itself
  }
  std::vector<RawPlanSection>& s = *sections;
  const size_t i = rng() % s.size();
  switch (rng() % 16) {
    case 0:  // another kind, known or not
      s[i].kind = rng() % 4 == 0 ? static_cast<uint32_t>(rng()) : 1 + rng() % 10;
      break;
    case 1:
      s[i].flags = rng() % 2 == 0 ? (s[i].flags ^ 1u) : static_cast<uint32_t>(rng());
      break;
    case 2:
      s.erase(s.begin() + i);
      break;
    case 3:
      s.push_back(s[i]);
      break;
    case 4:
      std::swap(s[i], s[rng() % s.size()]);
      break;
    default: {
      // The payload: most of the budget, since that is where the parsers are.
      size_t others = 0;
      for (size_t k = 0; k < s.size(); ++k) {
        if (k != i) others += s[k].bytes.size() + 64;
      }
      const size_t room = max_size > others + 1024 ? max_size - others - 1024 : 0;
      if (room == 0) return LLVMFuzzerMutate(data, size, max_size);
      MutateBytes(s[i].bytes, room);
      break;
    }
  }
  const std::string out = vibrant::AssemblePlan(s, VersionOf(data, size));
  if (out.size() > max_size) return LLVMFuzzerMutate(data, size, max_size);
  std::memcpy(data, out.data(), out.size());
  return out.size();
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::StatusOr<std::unique_ptr<vibrant::PlanFile>> plan =
      vibrant::PlanFile::FromBuffer("fuzz.plan", absl::Span<const uint8_t>(data, size));
  if (!plan.ok()) {
    Check(!plan.status().message().empty(), "errors have a message");
    return 0;
  }
  if (!(*plan)->dispatch().empty()) {
    absl::StatusOr<vibrant::dispatch::Table> t = vibrant::dispatch::Parse((*plan)->dispatch(), "fuzz.plan");
    Check(t.ok() || !t.status().message().empty(), "dispatch errors have a message");
    // What the CUDA backend loads: graph, DISPATCH and KERNELS, cross-checked.
    absl::StatusOr<vibrant::Program> program = vibrant::LoadProgram(**plan);
    Check(program.ok() || !program.status().message().empty(), "program errors have a message");
    if (program.ok() && program->dispatch.has_value()) {
      Check(program->dispatch->values.size() == program->graph.values().size(),
            "a loaded program's table describes every value");
    }
  }
  absl::StatusOr<vibrant::ir::Graph> graph = (*plan)->LoadGraph();
  if (!graph.ok()) return 0;
  // LoadGraph validated it: the validation must agree with itself.
  absl::StatusOr<vibrant::GraphMemoryNeeds> needs = vibrant::ValidateExecutableGraph(*graph);
  Check(needs.ok(), "a loaded graph validates");
  if (!(*plan)->embedded_gguf().has_value()) return 0;  // never touch the file system
  absl::StatusOr<std::unique_ptr<vibrant::GgufFile>> model = (*plan)->OpenModel();
  if (!model.ok()) return 0;
  const vibrant::GgufFile* gguf = model->get();
  vibrant::CpuExecutorOptions opts;
  opts.threads = 1;
  opts.memory_limit = vibrant::MemoryLimit{int64_t{256} << 20, "the fuzzer's 256 MiB"};
  opts.warn = [](const std::string&) {};
  // The CPU backend as tools choose it: a plan sharded for tensor
  // parallelism (meta tp) runs as simulated ranks.
  absl::StatusOr<std::unique_ptr<vibrant::Executor>> exec = vibrant::CreateCpuBackend(
      *graph,
      [gguf](const std::string& source) -> absl::StatusOr<absl::Span<const uint8_t>> {
        const vibrant::GgufTensorInfo* t = gguf->FindTensor(source);
        if (t == nullptr) return absl::NotFoundError(source);
        return gguf->TensorData(*t);
      },
      opts);
  if (!exec.ok()) return 0;
  const int32_t tokens[2] = {1, 2};
  const size_t n = graph->max_tokens >= 2 ? 2 : 1;
  absl::StatusOr<absl::Span<const float>> out = (*exec)->Step(absl::Span<const int32_t>(tokens, n), 0);
  if (out.ok()) {
    volatile float sink = 0;
    for (float f : *out) sink = sink + f;
    (void)sink;
  }
  return 0;
}
