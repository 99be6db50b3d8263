#include "passes/assign_devices.h"

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "passes/graph_edit.h"

namespace vibrant::passes {
namespace {

using ir::Device;
using ir::Graph;
using ir::Op;
using ir::OpKind;
using ir::Storage;
using ir::Value;
using ir::ValueId;

absl::string_view A(std::string_view s) { return absl::string_view(s.data(), s.size()); }

std::string PolicyName(DevicePolicy p) {
  switch (p) {
    case DevicePolicy::kCpu: return "cpu";
    case DevicePolicy::kCuda: return "cuda";
    case DevicePolicy::kAuto: return "auto";
  }
  return "?";
}

// "matmul q.0": an op by kind and first output, for notes.
std::string OpDesc(const Graph& g, const Op& op) {
  std::string out = op.outputs.empty() ? "?" : g.value(op.outputs[0]).name;
  return absl::StrCat(A(ir::OpName(op.kind)), " ", out);
}

// The KV cache declaration a value is a version of, or -1.
ValueId KvRoot(const Graph& g, ValueId v) {
  const Value& val = g.value(v);
  if (val.storage != Storage::kKvCache) return -1;
  return val.alias_of >= 0 ? val.alias_of : v;
}

// Which side runs a copy between devices: the accelerator's runtime issues
// host<->device transfers in both directions.
Device CopyRunner(Device from, Device to) {
  return from == Device::kCuda || to == Device::kCuda ? Device::kCuda : to;
}

}  // namespace

absl::Status AssignGraphDevices(Graph& g, PassContext& ctx) {
  const bool have_cuda = static_cast<bool>(ctx.cuda_supports);
  if (ctx.device == DevicePolicy::kCuda && !have_cuda) {
    return absl::FailedPreconditionError(
        "device cuda was requested but this build has no CUDA backend (use --device cpu or auto)");
  }
  auto note = [&](std::string line) {
    if (ctx.explain_devices) ctx.notes.push_back(std::move(line));
  };
  note(absl::StrCat("assign-devices: policy ", PolicyName(ctx.device), ", CUDA backend ",
                    have_cuda ? "present" : "absent"));

  const size_t nops = g.ops().size();
  std::vector<Device> dev(nops, Device::kCpu);
  std::vector<std::string> why(nops);
  for (size_t i = 0; i < nops; ++i) {
    const Op& op = g.ops()[i];
    const std::string kind(ir::OpName(op.kind));
    if (op.kind == OpKind::kCopy && op.device != Device::kUnassigned) {
      dev[i] = op.device;
      why[i] = "an existing copy keeps its device";
    } else if (ctx.device == DevicePolicy::kCpu) {
      why[i] = "--device cpu";
    } else if (!have_cuda) {
      why[i] = "no CUDA backend in this build";
    } else if (ctx.cuda_supports(op)) {
      dev[i] = Device::kCuda;
      why[i] = absl::StrCat("the CUDA backend implements ", kind);
    } else {
      why[i] = absl::StrCat("the CUDA backend does not implement ", kind,
                            op.kind == OpKind::kFused ? " with this body" : "");
    }
  }

  // Ops touching one KV cache share a device: the cache lives in one place.
  std::map<ValueId, std::vector<size_t>> kv_ops;  // declaration -> ops (in order)
  for (size_t i = 0; i < nops; ++i) {
    const Op& op = g.ops()[i];
    if (op.kind == OpKind::kCopy) continue;
    for (ValueId in : op.inputs) {
      const ValueId r = KvRoot(g, in);
      if (r >= 0 && (kv_ops[r].empty() || kv_ops[r].back() != i)) kv_ops[r].push_back(i);
    }
  }
  for (bool changed = true; changed;) {
    changed = false;
    for (const auto& [root, list] : kv_ops) {
      size_t cpu_op = nops;
      for (size_t i : list) {
        if (dev[i] != Device::kCuda) {
          cpu_op = i;
          break;
        }
      }
      if (cpu_op == nops) continue;
      for (size_t i : list) {
        if (dev[i] == Device::kCuda) {
          dev[i] = Device::kCpu;
          why[i] = absl::StrCat("shares KV cache ", g.value(root).name, " with ",
                                OpDesc(g, g.ops()[cpu_op]), ", which runs on ", A(DeviceName(dev[cpu_op])));
          changed = true;
        }
      }
    }
  }
  for (size_t i = 0; i < nops; ++i) {
    note(absl::StrCat("op ", i, " ", OpDesc(g, g.ops()[i]), ": ", A(DeviceName(dev[i])), " (", why[i], ")"));
  }

  // Declarations. `on_device[{v, d}]` is the value that holds v on device d
  // when that is not v itself (copies and per-device weights).
  std::map<std::pair<ValueId, Device>, ValueId> on_device;
  const ValueId n_decl = static_cast<ValueId>(g.values().size());
  std::vector<unsigned> weight_devs(n_decl, 0);  // bit 1<<device of each user
  for (size_t i = 0; i < nops; ++i) {
    for (ValueId in : g.ops()[i].inputs) {
      if (g.value(in).storage == Storage::kWeight) weight_devs[in] |= 1u << static_cast<int>(dev[i]);
    }
  }
  constexpr unsigned kCpuBit = 1u << static_cast<int>(Device::kCpu);
  constexpr unsigned kCudaBit = 1u << static_cast<int>(Device::kCuda);
  for (ValueId v = 0; v < n_decl; ++v) {
    const Storage s = g.value(v).storage;
    if (g.value(v).producer >= 0) continue;
    if (s == Storage::kInput) {
      g.mutable_value(v).device = Device::kCpu;
    } else if (s == Storage::kKvCache) {
      auto it = kv_ops.find(v);
      g.mutable_value(v).device = it == kv_ops.end() ? Device::kCpu : dev[it->second.front()];
    } else if (s == Storage::kWeight) {
      const unsigned m = weight_devs[v];
      g.mutable_value(v).device = m == kCudaBit ? Device::kCuda : Device::kCpu;
      if (m == (kCpuBit | kCudaBit)) {
        Value w = g.value(v);
        w.name = UniqueValueName(g, w.name + ".cuda");
        w.device = Device::kCuda;
        const std::string name = w.name;
        on_device[{v, Device::kCuda}] = g.AddValue(std::move(w));
        note(absl::StrCat("weight ", g.value(v).name, ": on cpu and on cuda (as ", name,
                          "), read by ops on both; each device loads it once"));
      }
    }
  }

  std::vector<bool> is_output(g.values().size(), false);
  for (ValueId o : g.outputs()) is_output[o] = true;

  auto add_copy = [&](std::vector<Op>& ops, ValueId src, ValueId dst) {
    Op copy;
    copy.kind = OpKind::kCopy;
    copy.inputs = {src};
    copy.outputs = {dst};
    copy.device = CopyRunner(g.value(src).device, g.value(dst).device);
    ops.push_back(std::move(copy));
  };
  auto new_value_like = [&](ValueId v, Device d) {
    Value val;
    val.name = UniqueValueName(g, absl::StrCat(g.value(v).name, ".", A(DeviceName(d))));
    val.dtype = g.value(v).dtype;
    val.shape = g.value(v).shape;
    val.storage = Storage::kActivation;
    val.device = d;
    return g.AddValue(std::move(val));
  };

  std::vector<Op> ops;
  ops.reserve(nops + 8);
  for (size_t i = 0; i < nops; ++i) {
    Op op = g.ops()[i];
    const Device d = dev[i];
    for (ValueId& in : op.inputs) {
      // A copy reads its source wherever that lives.
      if (op.kind == OpKind::kCopy || g.value(in).device == d) continue;
      auto it = on_device.find({in, d});
      if (it != on_device.end()) {
        in = it->second;
        continue;
      }
      if (g.value(in).storage == Storage::kKvCache || g.value(in).storage == Storage::kWeight) {
        return absl::InternalError(absl::StrCat("assign-devices: ", g.value(in).name, " is on ",
                                                A(DeviceName(g.value(in).device)), " but ",
                                                OpDesc(g, op), " runs on ", A(DeviceName(d))));
      }
      const ValueId c = new_value_like(in, d);
      add_copy(ops, in, c);
      note(absl::StrCat("copy ", g.value(in).name, " -> ", g.value(c).name, " (",
                        A(DeviceName(g.value(in).device)), " -> ", A(DeviceName(d)), ") for ", OpDesc(g, op)));
      on_device[{in, d}] = c;
      in = c;
    }
    op.device = d;
    for (ValueId o : op.outputs) {
      if (op.kind != OpKind::kCopy || g.value(o).device == Device::kUnassigned) {
        g.mutable_value(o).device = d;
      }
    }
    ops.push_back(op);
    // Graph outputs are read by the host: the op writes a device-side value
    // and a copy brings it over under the output's name.
    const size_t op_at = ops.size() - 1;
    for (size_t k = 0; k < ops[op_at].outputs.size(); ++k) {
      const ValueId o = ops[op_at].outputs[k];
      if (!is_output[o] || g.value(o).device == Device::kCpu) continue;
      const Device from = g.value(o).device;
      const ValueId inner = new_value_like(o, from);
      ops[op_at].outputs[k] = inner;
      g.mutable_value(o).device = Device::kCpu;
      add_copy(ops, inner, o);
      note(absl::StrCat("copy ", g.value(inner).name, " -> ", g.value(o).name, " (", A(DeviceName(from)),
                        " -> cpu): graph output"));
      on_device[{o, from}] = inner;
    }
  }
  g.mutable_ops() = std::move(ops);
  g.Reindex();
  return absl::OkStatus();
}

Pass AssignDevices() {
  Pass p;
  p.name = "assign-devices";
  p.optional = false;
  p.run = AssignGraphDevices;
  return p;
}

}  // namespace vibrant::passes
