// cuda_plan_probe PLAN: loads a plan with the runtime alone (no compiler, no
// NVRTC linked into this binary: a test checks its symbols), runs one prefill
// and a few decode steps, and prints the backend's description and the first
// logits. It proves that running a plan compiles nothing.
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "runtime/backends.h"
#include "runtime/plan.h"
#include "runtime/program.h"

int main(int argc, char** argv) {
  using namespace vibrant;
  if (argc != 2) {
    std::fprintf(stderr, "usage: cuda_plan_probe PLAN\n");
    return 2;
  }
  auto fail = [](const absl::Status& s) {
    std::fprintf(stderr, "cuda_plan_probe: %s\n", std::string(s.message()).c_str());
    return 1;
  };
  absl::StatusOr<std::unique_ptr<PlanFile>> plan = PlanFile::Open(argv[1]);
  if (!plan.ok()) return fail(plan.status());
  absl::StatusOr<Program> program = LoadProgram(**plan);
  if (!program.ok()) return fail(program.status());
  absl::StatusOr<std::unique_ptr<GgufFile>> model = (*plan)->OpenModel();
  if (!model.ok()) return fail(model.status());
  absl::StatusOr<std::unique_ptr<Executor>> exec = CreateBackend(*program, GgufWeights(**model));
  if (!exec.ok()) return fail(exec.status());
  std::printf("%s\n", (*exec)->Describe().c_str());
  std::vector<int32_t> prompt = {1, 2, 3, 4};
  absl::StatusOr<absl::Span<const float>> logits = (*exec)->Step(prompt, 0);
  if (!logits.ok()) return fail(logits.status());
  for (int32_t p = 4; p < 8 && logits.ok(); ++p) {
    const int32_t tok = p;
    logits = (*exec)->Step({&tok, 1}, p);
  }
  if (!logits.ok()) return fail(logits.status());
  std::printf("logits[0..3]: %g %g %g %g\n", (*logits)[0], (*logits)[1], (*logits)[2], (*logits)[3]);
  return 0;
}
