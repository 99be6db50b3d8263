#include "passes/append_sample.h"

#include <string>
#include <variant>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace vibrant::passes {

absl::Status AppendSampleOp(ir::Graph& g, bool required) {
  auto skip = [&](const std::string& why) {
    if (!required) return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrCat("cannot sample in the step: ", why));
  };
  if (g.FindValue("sampling") >= 0 || g.FindValue("token") >= 0) {
    return skip("the graph already has a value named 'sampling' or 'token'");
  }
  absl::StatusOr<ir::ValueId> logits = ir::FindLogitsOutput(g);
  if (!logits.ok()) return skip(std::string(logits.status().message()));
  const ir::Value& l = g.value(*logits);
  if (l.shape.size() != 2 || l.shape[1] <= 0) {
    return skip(absl::StrCat("the logits are ", ir::ShapeToString(l.shape), ", not [rows, n_vocab]"));
  }
  // Unasked (the default for cuda plans), only a model's step: a graph whose
  // meta says n_vocab and whose logits rows are that long.
  if (!required) {
    auto it = g.meta.find("n_vocab");
    const int64_t* n_vocab = it == g.meta.end() ? nullptr : std::get_if<int64_t>(&it->second);
    if (n_vocab == nullptr || *n_vocab != l.shape[1]) return absl::OkStatus();
  }
  const ir::ValueId params = g.AddInput("sampling", DType::kI32, {8});
  absl::StatusOr<ir::ValueId> token = g.AddOp(ir::OpKind::kSample, {*logits, params}, "token");
  if (!token.ok()) return token.status();
  g.MarkOutput(*token);
  return absl::OkStatus();
}

Pass AppendSample(bool required) {
  Pass p;
  p.name = "append-sample";
  p.optional = true;
  p.run = [required](ir::Graph& g, PassContext&) { return AppendSampleOp(g, required); };
  return p;
}

}  // namespace vibrant::passes
