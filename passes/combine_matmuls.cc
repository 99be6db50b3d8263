#include "passes/combine_matmuls.h"

#include <map>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "ir/verifier.h"

namespace vibrant::passes {

using ir::Graph;
using ir::Op;
using ir::OpKind;
using ir::ValueId;

absl::StatusOr<int> CombineMatmulsOn(Graph& g, ir::Device device) {
  // Groups: (x, weight dtype) -> member ops in order. A matmul joins a group
  // only when everything it reads exists where the group's op will stand
  // (the first member's place): x and weights do; a bias some op computes
  // (after the first member) does not.
  std::map<std::pair<ValueId, DType>, std::vector<int>> groups;
  for (int i = 0; i < static_cast<int>(g.ops().size()); ++i) {
    const Op& op = g.ops()[i];
    if (op.kind != OpKind::kMatMul || op.device != device) continue;
    std::vector<int>& members = groups[{op.inputs[0], g.value(op.inputs[1]).dtype}];
    bool available = true;
    if (!members.empty()) {
      for (size_t k = 1; k < op.inputs.size(); ++k) {
        const int producer = g.value(op.inputs[k]).producer;
        available = available && producer < members[0];
      }
    }
    if (available) members.push_back(i);
  }
  std::vector<int> member_of(g.ops().size(), -1);  // op -> its group's first member
  std::map<int, const std::vector<int>*> group_at;  // first member -> the group
  for (const auto& [key, members] : groups) {
    if (members.size() < 2) continue;
    for (int m : members) member_of[m] = members[0];
    group_at[members[0]] = &members;
  }
  std::vector<Op> ops;
  int made = 0;
  for (int i = 0; i < static_cast<int>(g.ops().size()); ++i) {
    const Op& op = g.ops()[i];
    if (member_of[i] < 0) {
      ops.push_back(op);
      continue;
    }
    if (member_of[i] != i) continue;  // folded into its group's first member
    const std::vector<int>& members = *group_at.at(i);
    Op multi;
    multi.kind = OpKind::kMultiMatMul;
    multi.device = device;
    multi.inputs.push_back(op.inputs[0]);
    std::vector<int64_t> flags;
    std::vector<ValueId> biases;
    for (int m : members) {
      const Op& mm = g.ops()[m];
      multi.inputs.push_back(mm.inputs[1]);
      flags.push_back(mm.inputs.size() == 3 ? 1 : 0);
      if (mm.inputs.size() == 3) biases.push_back(mm.inputs[2]);
      multi.outputs.push_back(mm.outputs[0]);
    }
    multi.inputs.insert(multi.inputs.end(), biases.begin(), biases.end());
    multi.attrs["bias"] = flags;
    ops.push_back(std::move(multi));
    ++made;
  }
  g.mutable_ops() = std::move(ops);
  g.Reindex();
  return made;
}

Pass CombineMatmuls() {
  Pass p;
  p.name = "combine-matmuls";
  p.optional = true;
  p.run = [](Graph& g, PassContext& ctx) -> absl::Status {
    for (const KernelTarget* t : ctx.kernel_targets()) {
      absl::StatusOr<int> n = CombineMatmulsOn(g, t->device());
      if (!n.ok()) return n.status();
    }
    return absl::OkStatus();
  };
  return p;
}

}  // namespace vibrant::passes
