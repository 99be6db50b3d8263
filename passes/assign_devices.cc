#include "passes/assign_devices.h"

#include <algorithm>
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

// N of a trailing ".N" or ".N_suffix" in a value name; -1 without one.
int64_t LayerInName(const std::string& name) {
  const size_t dot = name.rfind('.');
  if (dot == std::string::npos) return -1;
  size_t i = dot + 1;
  int64_t n = 0;
  for (; i < name.size() && name[i] >= '0' && name[i] <= '9' && n < (int64_t{1} << 40); ++i) {
    n = n * 10 + (name[i] - '0');
  }
  if (i == dot + 1 || (i < name.size() && name[i] != '_')) return -1;
  return n;
}

// N of a GGUF tensor name "blk.N.<...>"; -1 otherwise.
int64_t LayerInSource(const std::string& source) {
  if (source.rfind("blk.", 0) != 0) return -1;
  const size_t end = source.find('.', 4);
  if (end == std::string::npos || end == 4) return -1;
  int64_t n = 0;
  for (size_t i = 4; i < end; ++i) {
    if (source[i] < '0' || source[i] > '9' || n > (int64_t{1} << 40)) return -1;
    n = n * 10 + (source[i] - '0');
  }
  return n;
}

}  // namespace

int64_t ValueLayer(const Value& v) {
  return v.storage == Storage::kWeight ? LayerInSource(v.source) : LayerInName(v.name);
}

int64_t OpLayer(const Graph& g, const Op& op) {
  for (ValueId in : op.inputs) {
    const Value& v = g.value(in);
    if (v.storage != Storage::kWeight) continue;
    if (const int64_t l = ValueLayer(v); l >= 0) return l;
  }
  return op.outputs.empty() ? -1 : ValueLayer(g.value(op.outputs[0]));
}

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
  // -ngl: which ops the layer split keeps on the CPU, and why.
  std::vector<std::string> kept_on_cpu(nops);
  if (ctx.gpu_layers >= 0 && ctx.device != DevicePolicy::kCpu && have_cuda) {
    auto it = g.meta.find("n_layer");
    const int64_t* nl = it == g.meta.end() ? nullptr : std::get_if<int64_t>(&it->second);
    if (nl == nullptr || *nl < 1) {
      return absl::InvalidArgumentError(
          "assign-devices: --gpu-layers needs the graph's layer count (meta n_layer), which it lacks");
    }
    const int64_t n_layer = *nl;
    if (ctx.gpu_layers > n_layer) {
      note(absl::StrCat("assign-devices: --gpu-layers ", ctx.gpu_layers, " > the model's ", n_layer,
                        " layers: no split, the whole model on the GPU"));
    } else {
      const int64_t first_gpu = n_layer - ctx.gpu_layers;
      note(absl::StrCat("assign-devices: --gpu-layers ", ctx.gpu_layers, " of ", n_layer, " layers: ",
                        ctx.gpu_layers == 0 ? std::string("none")
                                            : absl::StrCat("layers ", first_gpu, "..", n_layer - 1),
                        " on the GPU; the input layer, ",
                        first_gpu > 0 ? absl::StrCat("layers 0..", first_gpu - 1, ", ") : std::string(),
                        "the output head on the CPU"));
      std::vector<int64_t> layer(nops, -1);
      size_t first_layered = nops, last_layered = 0;
      for (size_t i = 0; i < nops; ++i) {
        layer[i] = OpLayer(g, g.ops()[i]);
        if (layer[i] >= 0) {
          first_layered = std::min(first_layered, i);
          last_layered = i;
        }
      }
      int64_t current = -1;
      for (size_t i = 0; i < nops; ++i) {
        if (layer[i] >= 0) current = layer[i];
        if (i < first_layered) {
          kept_on_cpu[i] = "-ngl: the input layer stays on the CPU";
        } else if (i > last_layered) {
          kept_on_cpu[i] = absl::StrCat("-ngl ", ctx.gpu_layers, " <= ", n_layer,
                                        " layers: the output head stays on the CPU");
        } else if (current < first_gpu) {
          kept_on_cpu[i] = absl::StrCat("-ngl ", ctx.gpu_layers, ": layer ", current, " stays on the CPU");
        }
      }
    }
  }
  for (size_t i = 0; i < nops; ++i) {
    const Op& op = g.ops()[i];
    const std::string kind(ir::OpName(op.kind));
    if (op.kind == OpKind::kCopy && op.device != Device::kUnassigned) {
      dev[i] = op.device;
      why[i] = "an existing copy keeps its device";
    } else if (!kept_on_cpu[i].empty()) {
      why[i] = kept_on_cpu[i];
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
