// The persistent decode kernel: schedule (stages, dependencies, groups per
// block) and source. See persistent.h for the design.
#include "codegen/kernels/persistent.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"

namespace vibrant::codegen {

using dispatch::Arg;
using dispatch::BufRef;
using dispatch::Launch;
using dispatch::LaunchKind;
using dispatch::Region;

namespace {

// At most this many sub-blocks per block (named barriers 1..15).
constexpr int kMaxSubs = 15;

struct Range {
  Region region;
  int64_t begin, end;
  bool write;
};

uint64_t PtrSlot(const BufRef& b) {
  if (b.region == Region::kNone) return 0;
  return (static_cast<uint64_t>(b.region) << 56) | static_cast<uint64_t>(b.offset.Eval(1));
}

void AddRange(const BufRef& b, bool write, std::vector<Range>* out) {
  // Weights are never written during a step; null touches nothing.
  if (b.region == Region::kNone || b.region == Region::kWeights) return;
  const int64_t at = b.offset.Eval(1), n = b.extent.Eval(1);
  if (n <= 0) return;
  out->push_back({b.region, at, at + n, write});
}

// Whether b (later) must wait for a: one of them writes bytes the other
// touches.
bool Conflict(const std::vector<Range>& a, const std::vector<Range>& b) {
  for (const Range& x : a) {
    for (const Range& y : b) {
      if ((x.write || y.write) && x.region == y.region && x.begin < y.end && y.begin < x.end) return true;
    }
  }
  return false;
}

}  // namespace

int64_t PersistentSchedule::total_groups() const {
  int64_t n = 0;
  for (const PersistentStage& s : stages) n += s.groups;
  return n;
}

int64_t PersistentSchedule::total_deps() const {
  int64_t n = 0;
  for (const PersistentStage& s : stages) n += static_cast<int64_t>(s.deps.size());
  return n;
}

int64_t PersistentStateBytes(const PersistentSchedule& schedule) {
  return 4 * (static_cast<int64_t>(schedule.stages.size()) + 1);
}

absl::StatusOr<PersistentSchedule> BuildPersistentSchedule(const dispatch::Table& table,
                                                           const std::vector<int>& step,
                                                           const std::string& module_source, int sm_count,
                                                           int blocks_per_sm) {
  const std::set<std::string> shared = FunctionsUsingSharedMemory(module_source);
  if (sm_count < 1 || blocks_per_sm < 1 || blocks_per_sm > 32) {
    return absl::InvalidArgumentError(
        absl::StrCat("persistent decode: ", sm_count, " SMs x ", blocks_per_sm, " blocks per SM"));
  }
  if (step.empty()) return absl::InvalidArgumentError("persistent decode: the step has no launches");
  PersistentSchedule p;
  p.blocks_per_sm = blocks_per_sm;
  p.blocks = sm_count * blocks_per_sm;
  p.threads = 64;
  for (int li : step) {
    const Launch& l = table.launches.at(li);
    const std::string at = absl::StrCat("persistent decode: launch ", li, " (", l.name, ", op ", l.op, ")");
    if (l.kind == LaunchKind::kGemm) return absl::UnimplementedError(at + ": a GEMM cannot be a task");
    if (l.kind == LaunchKind::kAllReduce || l.kind == LaunchKind::kAllGather) {
      return absl::UnimplementedError(at + ": a collective (NCCL) cannot be a task");
    }
    if (l.kind != LaunchKind::kKernel) continue;
    if (l.block[1] != 1 || l.block[2] != 1 || l.block[0] < 32 || (l.block[0] & (l.block[0] - 1)) != 0) {
      return absl::UnimplementedError(absl::StrCat(at, ": block (", l.block[0], ", ", l.block[1], ", ",
                                                   l.block[2], ") is not a power of two >= 32 along x"));
    }
    if (l.smem != 0) return absl::UnimplementedError(at + ": dynamic shared memory");
    p.threads = std::max<int>(p.threads, static_cast<int>(l.block[0]));
  }
  std::map<std::pair<std::string, int>, int> body_index;
  auto body = [&](const std::string& kernel, int threads) {
    auto [it, fresh] = body_index.emplace(std::make_pair(kernel, threads), static_cast<int>(p.bodies.size()));
    if (fresh) p.bodies.push_back({kernel, threads});
    return it->second;
  };
  std::vector<std::vector<Range>> ranges;
  for (int li : step) {
    const Launch& l = table.launches.at(li);
    PersistentStage s;
    s.launch = li;
    std::vector<Range> r;
    if (l.kind == LaunchKind::kCopy) {
      // The built-in copy body: 16 bytes per thread and step, grid-stride.
      const int64_t bytes = l.bytes.Eval(1);
      s.threads = p.threads;
      s.body = body("", p.threads);
      s.grid[0] = std::clamp<int64_t>((bytes + 16 * p.threads - 1) / (16 * p.threads), 1, 4 * p.blocks);
      s.args = {PtrSlot(l.dst), PtrSlot(l.src), static_cast<uint64_t>(bytes)};
      AddRange(l.dst, true, &r);
      AddRange(l.src, false, &r);
    } else {
      s.threads = static_cast<int>(l.block[0]);
      s.body = body(l.name, s.threads);
      std::vector<ParamAccess> access = KernelParamAccess(module_source, l.name);
      if (access.size() != l.args.size()) access.assign(l.args.size(), ParamAccess::kReadWrite);
      for (int d = 0; d < 3; ++d) s.grid[d] = l.grid[d].Eval(1);
      for (size_t ai = 0; ai < l.args.size(); ++ai) {
        const Arg& a = l.args[ai];
        uint64_t slot = 0;
        switch (a.kind) {
          case Arg::Kind::kPtr:
            slot = PtrSlot(a.buf);
            AddRange(a.buf, access[ai] != ParamAccess::kRead, &r);
            if (a.buf.region == Region::kWeights && a.buf.extent.Eval(1) >= 4096) {
              s.prefetch.push_back({a.buf.offset.Eval(1), a.buf.extent.Eval(1)});
            }
            break;
          case Arg::Kind::kI32: {
            const uint32_t v = static_cast<uint32_t>(static_cast<int32_t>(a.value.Eval(1)));
            slot = v;
            break;
          }
          case Arg::Kind::kI64:
            slot = static_cast<uint64_t>(a.value.Eval(1));
            break;
          case Arg::Kind::kF32: {
            uint32_t v;
            std::memcpy(&v, &a.f, 4);
            slot = v;
            break;
          }
        }
        s.args.push_back(slot);
      }
    }
    s.subs = l.kind == LaunchKind::kKernel && shared.count(l.name)
                 ? 1
                 : std::min(kMaxSubs, p.threads / s.threads);
    // A group is a contiguous range of tasks one block runs (its sub-blocks
    // taking every subs-th): at most one group per block and stage, so a
    // block checks a stage's dependencies once.
    const int64_t tasks = s.grid[0] * s.grid[1] * s.grid[2];
    s.groups = std::min<int64_t>((tasks + s.subs - 1) / s.subs, p.blocks);
    if (s.groups > (int64_t{1} << 30)) {
      return absl::UnimplementedError(absl::StrCat("persistent decode: launch ", li, " has ", tasks, " blocks"));
    }
    ranges.push_back(std::move(r));
    p.stages.push_back(std::move(s));
  }
  // Dependencies: every earlier stage whose bytes overlap, minus those an
  // already-kept dependency waits for (transitively).
  const int n = static_cast<int>(p.stages.size());
  std::vector<std::vector<bool>> anc(n, std::vector<bool>(n, false));
  for (int i = 0; i < n; ++i) {
    std::vector<bool> covered(n, false);
    for (int j = i - 1; j >= 0; --j) {
      if (covered[j] || !Conflict(ranges[j], ranges[i])) continue;
      p.stages[i].deps.push_back(j);
      covered[j] = true;
      for (int k = 0; k < j; ++k) covered[k] = covered[k] || anc[j][k];
    }
    for (int d : p.stages[i].deps) {
      anc[i][d] = true;
      for (int k = 0; k < d; ++k) anc[i][k] = anc[i][k] || anc[d][k];
    }
    std::sort(p.stages[i].deps.begin(), p.stages[i].deps.end());
  }
  // Groups dealt round-robin in stage order.
  p.block_groups.assign(p.blocks, {});
  int64_t g = 0;
  for (int i = 0; i < n; ++i) {
    for (int64_t k = 0; k < p.stages[i].groups; ++k, ++g) p.block_groups[g % p.blocks].push_back({i, k});
  }
  return p;
}

namespace {

// Skips a comment or a string/char literal starting at src[i], if any.
size_t SkipNonCode(const std::string& src, size_t i) {
  if (src.compare(i, 2, "//") == 0) {
    const size_t e = src.find('\n', i);
    return e == std::string::npos ? src.size() : e;
  }
  if (src.compare(i, 2, "/*") == 0) {
    const size_t e = src.find("*/", i + 2);
    return e == std::string::npos ? src.size() : e + 2;
  }
  if (src[i] == '"' || src[i] == '\'') {
    const char q = src[i];
    size_t j = i + 1;
    while (j < src.size() && src[j] != q) j += src[j] == '\\' ? 2 : 1;
    return std::min(j + 1, src.size());
  }
  if (src[i] == '#') {  // a preprocessor line (with continuations)
    size_t j = i;
    while (j < src.size() && src[j] != '\n') j += (src[j] == '\\' && j + 1 < src.size()) ? 2 : 1;
    return j;
  }
  return i;
}

bool IsIdent(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; }

// Top-level function definitions of the source: name -> body text.
std::multimap<std::string, std::string> TopLevelFunctions(const std::string& src) {
  std::multimap<std::string, std::string> out;
  // Braces of `namespace X {` and `extern "C" {` do not nest functions.
  std::vector<bool> transparent;
  int depth = 0;  // function depth
  size_t open_at = 0;
  std::string name;
  for (size_t i = 0; i < src.size();) {
    const size_t skip = SkipNonCode(src, i);
    if (skip != i) {
      i = skip;
      continue;
    }
    const char c = src[i];
    if (c == '{') {
      size_t j = i;
      while (j > 0 && std::isspace(static_cast<unsigned char>(src[j - 1]))) --j;
      size_t b = j;
      while (b > 0 && IsIdent(src[b - 1])) --b;
      size_t w = b;
      while (w > 0 && std::isspace(static_cast<unsigned char>(src[w - 1]))) --w;
      const bool ns = depth == 0 && ((w >= 9 && src.compare(w - 9, 9, "namespace") == 0) ||
                                     (j >= 3 && src.compare(j - 3, 3, "\"C\"") == 0) ||
                                     (j >= 9 && src.compare(j - 9, 9, "namespace") == 0));
      transparent.push_back(ns);
      if (ns) {
        ++i;
        continue;
      }
      if (depth == 0) {
        open_at = i;
        name.clear();
        // `name(...) [qualifiers] {`: the identifier before the parameter list.
        if (j > 0 && src[j - 1] == ')') {
          int d = 0;
          size_t k = j;
          while (k > 0) {
            --k;
            if (src[k] == ')') ++d;
            if (src[k] == '(' && --d == 0) break;
          }
          size_t e = k;
          while (e > 0 && std::isspace(static_cast<unsigned char>(src[e - 1]))) --e;
          size_t s0 = e;
          while (s0 > 0 && IsIdent(src[s0 - 1])) --s0;
          name = src.substr(s0, e - s0);
        }
      }
      ++depth;
    } else if (c == '}') {
      const bool ns = !transparent.empty() && transparent.back();
      if (!transparent.empty()) transparent.pop_back();
      if (!ns) {
        if (--depth == 0 && !name.empty()) out.emplace(name, src.substr(open_at, i + 1 - open_at));
        if (depth < 0) depth = 0;
      }
    }
    ++i;
  }
  return out;
}

bool Calls(const std::string& body, const std::string& fn) {
  for (size_t at = body.find(fn); at != std::string::npos; at = body.find(fn, at + 1)) {
    const size_t e = at + fn.size();
    if (at > 0 && IsIdent(body[at - 1])) continue;
    size_t k = e;
    while (k < body.size() && body[k] == ' ') ++k;
    if (k < body.size() && (body[k] == '(' || body[k] == '<')) return true;
  }
  return false;
}

// The module's source with every `extern "C" __global__ void
// [__launch_bounds__(..)] name(` turned into a device function head.
std::string KernelsAsDeviceFunctions(const std::string& src) {
  static constexpr char kHead[] = "extern \"C\" __global__ void ";
  std::string out;
  size_t at = 0;
  for (size_t k = src.find(kHead); k != std::string::npos; k = src.find(kHead, at)) {
    out.append(src, at, k - at);
    out += "VB_INLINE void ";
    size_t i = k + sizeof(kHead) - 1;
    if (src.compare(i, 18, "__launch_bounds__(") == 0) {
      int d = 0;
      for (; i < src.size(); ++i) {
        if (src[i] == '(') ++d;
        if (src[i] == ')' && --d == 0) break;
      }
      ++i;
      while (i < src.size() && src[i] == ' ') ++i;
    }
    at = i;
  }
  out.append(src, at, std::string::npos);
  return out;
}

constexpr char kNamespaceHead[] = R"CUDA(
// ---- the persistent decode step (codegen/kernels/persistent.cc)
// The module again, inside namespace vbp: its kernels become device
// functions, and blockIdx, gridDim, threadIdx, blockDim and __syncthreads
// are the current task's (the block's shared task record: its sub-block,
// named barrier 1 + sub). __restrict__ is dropped: buffers are rewritten
// between tasks, so nothing may load through the read-only path.
namespace vbp {
struct Task {
  int threads, shift, gx, gy, gz;
  int v[16];  // per sub-block: the task (linear block index) it runs
};
__shared__ Task task;
VB_INLINE int sub() { return (int)(threadIdx.x >> task.shift); }
VB_INLINE uint3 tid() { return make_uint3(threadIdx.x & (task.threads - 1), 0, 0); }
VB_INLINE uint3 bid() {
  const int v = task.v[sub()];
  return make_uint3(v % task.gx, (v / task.gx) % task.gy, v / (task.gx * task.gy));
}
VB_INLINE dim3 bdim() { return dim3(task.threads, 1, 1); }
VB_INLINE dim3 gdim() { return dim3(task.gx, task.gy, task.gz); }
VB_INLINE void sync() { asm volatile("bar.sync %0, %1;" ::"r"(1 + sub()), "r"(task.threads) : "memory"); }
#define threadIdx (::vbp::tid())
#define blockIdx (::vbp::bid())
#define blockDim (::vbp::bdim())
#define gridDim (::vbp::gdim())
#define __syncthreads() ::vbp::sync()
#define __restrict__
)CUDA";

constexpr char kNamespaceTail[] = R"CUDA(
// The built-in copy task (a memcpy launch of the step).
VB_INLINE void vbp_copy(unsigned char* dst, const unsigned char* src, long long bytes) {
  const long long stride = (long long)gridDim.x * blockDim.x;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < bytes; i += stride) dst[i] = src[i];
}
#undef threadIdx
#undef blockIdx
#undef blockDim
#undef gridDim
#undef __syncthreads
#undef __restrict__

// Argument slots -> parameters: a pointer slot is (region << 56) | offset.
template <int... I> struct seq {};
template <int N, int... I> struct mkseq : mkseq<N - 1, N - 1, I...> {};
template <int... I> struct mkseq<0, I...> { typedef seq<I...> type; };
template <class T> struct arg {
  static VB_INLINE T get(unsigned long long s, char* const*) {
    union { unsigned long long u; T v; } x;
    x.u = s;
    return x.v;
  }
};
template <class T> struct arg<T*> {
  static VB_INLINE T* get(unsigned long long s, char* const* base) {
    return (T*)(base[s >> 56] + (s & 0x00ffffffffffffffull));
  }
};
template <class Sig> struct fn;
template <class... P> struct fn<void (*)(P...)> {
  template <void (*F)(P...), int... I>
  static VB_INLINE void call(seq<I...>, const unsigned long long* a, char* const* base) {
    F(arg<P>::get(a[I], base)...);
  }
  template <void (*F)(P...)>
  static VB_INLINE void run(const unsigned long long* a, char* const* base) {
    call<F>(typename mkseq<sizeof...(P)>::type(), a, base);
  }
};
#define VBP_RUN(f) ::vbp::fn<decltype(&::vbp::f)>::template run<&::vbp::f>(args, base)
#define VBP_RUN_K(f) ::vbp::fn<decltype(&::vbp::vbk::f)>::template run<&::vbp::vbk::f>(args, base)

struct Stage {
  int body, threads, shift, subs, gx, gy, gz, groups, dep0, ndeps, arg0, pf0, npf;
};
)CUDA";

}  // namespace

std::vector<ParamAccess> KernelParamAccess(const std::string& module_source, const std::string& name) {
  static constexpr char kHead[] = "extern \"C\" __global__ void ";
  for (size_t k = module_source.find(kHead); k != std::string::npos; k = module_source.find(kHead, k + 1)) {
    size_t i = k + sizeof(kHead) - 1;
    if (module_source.compare(i, 18, "__launch_bounds__(") == 0) {
      i = module_source.find(')', i);
      if (i == std::string::npos) return {};
      ++i;
      while (i < module_source.size() && module_source[i] == ' ') ++i;
    }
    if (module_source.compare(i, name.size(), name) != 0 || i + name.size() >= module_source.size() ||
        module_source[i + name.size()] != '(') {
      continue;
    }
    const size_t open = i + name.size(), close = module_source.find(')', open);
    if (close == std::string::npos) return {};
    std::vector<ParamAccess> out;
    size_t at = open + 1;
    while (at < close) {
      size_t comma = module_source.find(',', at);
      if (comma == std::string::npos || comma > close) comma = close;
      const std::string p = module_source.substr(at, comma - at);
      const size_t star = p.find('*');
      if (star == std::string::npos) {
        out.push_back(ParamAccess::kValue);
      } else {
        // `const T* name` (or `T const* name`) points at what the kernel only reads.
        out.push_back(p.substr(0, star).find("const") != std::string::npos ? ParamAccess::kRead
                                                                            : ParamAccess::kReadWrite);
      }
      at = comma + 1;
    }
    return out;
  }
  return {};
}

std::set<std::string> FunctionsUsingSharedMemory(const std::string& module_source) {
  const std::multimap<std::string, std::string> fns = TopLevelFunctions(module_source);
  std::set<std::string> out;
  for (const auto& [name, body] : fns) {
    if (body.find("__shared__") != std::string::npos) out.insert(name);
  }
  for (bool grew = true; grew;) {
    grew = false;
    for (const auto& [name, body] : fns) {
      if (out.count(name)) continue;
      for (const std::string& s : out) {
        if (Calls(body, s)) {
          out.insert(name);
          grew = true;
          break;
        }
      }
    }
  }
  return out;
}

absl::StatusOr<std::string> PersistentSource(const std::string& module_source, const PersistentSchedule& p) {
  for (const char* bad : {"__syncthreads_count", "__syncthreads_and", "__syncthreads_or", "extern __shared__",
                          "cooperative_groups", "namespace vbp"}) {
    if (module_source.find(bad) != std::string::npos) {
      return absl::UnimplementedError(
          absl::StrCat("persistent decode: the module uses ", bad, ", which tasks cannot"));
    }
  }
  for (const PersistentBody& b : p.bodies) {
    if (!b.kernel.empty() &&
        module_source.find(absl::StrCat(" ", b.kernel, "(")) == std::string::npos) {
      return absl::NotFoundError(absl::StrCat("persistent decode: the module has no kernel ", b.kernel));
    }
  }
  std::string src = kNamespaceHead;
  // Include guards of the module's sources (`#ifndef X` + `#define X`) are
  // defined by the first copy: undefine them so the second copy is whole.
  for (size_t at = module_source.find("#ifndef "); at != std::string::npos;
       at = module_source.find("#ifndef ", at + 1)) {
    const size_t e = module_source.find('\n', at);
    if (e == std::string::npos) break;
    const std::string name = module_source.substr(at + 8, e - at - 8);
    if (module_source.compare(e + 1, 8 + name.size(), "#define " + name) == 0) {
      absl::StrAppend(&src, "#undef ", name, "\n");
    }
  }
  // Tasks are not grids: no programmatic-dependent-launch waits or triggers.
  src += absl::StrReplaceAll(KernelsAsDeviceFunctions(module_source), {{"\n  VB_GRID_DEPENDENCY();", ""}});
  src += kNamespaceTail;
  // The schedule as data.
  const int n = static_cast<int>(p.stages.size());
  std::string stages, args, deps, firsts, groups, prefetch;
  int64_t arg_at = 0, dep_at = 0, pf_at = 0;
  for (int i = 0; i < n; ++i) {
    const PersistentStage& s = p.stages[i];
    int shift = 0;
    while ((1 << shift) < s.threads) ++shift;
    absl::StrAppend(&stages, "  {", s.body, ", ", s.threads, ", ", shift, ", ", s.subs, ", ", s.grid[0], ", ",
                    s.grid[1], ", ", s.grid[2], ", ", s.groups, ", ", dep_at, ", ", s.deps.size(), ", ", arg_at,
                    ", ", pf_at, ", ", s.prefetch.size(), "},  // launch ", s.launch, "\n");
    for (const auto& [off, bytes] : s.prefetch) absl::StrAppend(&prefetch, off, "ll,", bytes, "ll,");
    pf_at += static_cast<int64_t>(s.prefetch.size());
    for (uint64_t a : s.args) absl::StrAppend(&args, a, "ull,");
    for (int d : s.deps) absl::StrAppend(&deps, d, ",");
    arg_at += static_cast<int64_t>(s.args.size());
    dep_at += static_cast<int64_t>(s.deps.size());
  }
  int64_t at = 0;
  for (const auto& list : p.block_groups) {
    absl::StrAppend(&firsts, at, ",");
    for (const auto& [stage, k] : list) absl::StrAppend(&groups, "{", stage, ",", k, "},");
    at += static_cast<int64_t>(list.size());
  }
  absl::StrAppend(&firsts, at);
  if (args.empty()) args = "0ull";
  if (deps.empty()) deps = "0";
  if (prefetch.empty()) prefetch = "0";
  if (groups.empty()) groups = "{0,0}";
  absl::StrAppend(&src, "__device__ const Stage stages[", n, "] = {\n", stages, "};\n",
                  "__device__ const unsigned long long args[] = {", args, "};\n",
                  "__device__ const int deps[] = {", deps, "};\n",
                  "__device__ const long long prefetch[] = {", prefetch, "};\n",
                  "__device__ const int block_first[", p.blocks + 1, "] = {", firsts, "};\n",
                  "__device__ const int2 groups[] = {", groups, "};\n}  // namespace vbp\n");
  std::string cases;
  for (size_t i = 0; i < p.bodies.size(); ++i) {
    const PersistentBody& b = p.bodies[i];
    absl::StrAppend(&cases, "        case ", i, ": ", b.kernel.empty() ? "VBP_RUN(vbp_copy" : "VBP_RUN_K(", b.kernel,
                    "); break;\n");
  }
  std::string kernel = R"CUDA(
// Runs its groups in order: wait for the group's stage's dependencies, run
// one task per sub-block, count the group done. The last block out resets
// the counters for the next step.
extern "C" __global__ void __launch_bounds__($THREADS, $MINB) $NAME(char* arena, char* weights, char* kv,
                                                                  char* scratch, unsigned* state) {
  __shared__ char* base[6];
  if (threadIdx.x == 0) {
    base[0] = 0;
    base[1] = arena;
    base[2] = weights;
    base[3] = kv;
    base[4] = scratch;
    base[5] = (char*)state;
  }
  const int end = vbp::block_first[blockIdx.x + 1];
  for (int gi = vbp::block_first[blockIdx.x]; gi < end; ++gi) {
    const int2 g = vbp::groups[gi];
    const vbp::Stage st = vbp::stages[g.x];
    for (int w = 0; w < st.npf; ++w) {
      const long long off = vbp::prefetch[2 * (st.pf0 + w)], bytes = vbp::prefetch[2 * (st.pf0 + w) + 1];
      const long long a = off + bytes * g.y / st.groups, e = off + bytes * (g.y + 1) / st.groups;
      for (long long x = (a & ~127ll) + 128ll * threadIdx.x; x < e; x += 128ll * blockDim.x) {
        asm volatile("prefetch.global.L2 [%0];" ::"l"(weights + x));
      }
    }
    if (threadIdx.x == 0) {
      for (int d = 0; d < st.ndeps; ++d) {
        const int dep = vbp::deps[st.dep0 + d];
        const unsigned target = (unsigned)vbp::stages[dep].groups;
        const unsigned* c = state + dep;
        unsigned seen;
        do {  // acquire: the dependency's writes are visible once its count is
          asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(seen) : "l"(c) : "memory");
        } while (seen < target);
      }
      vbp::task.threads = st.threads;
      vbp::task.shift = st.shift;
      vbp::task.gx = st.gx;
      vbp::task.gy = st.gy;
      vbp::task.gz = st.gz;
    }
    __syncthreads();
    const int sub = (int)(threadIdx.x >> st.shift);
    if (sub < st.subs) {
      // The group's tasks [vb, ve), every subs-th to this sub-block.
      const long long total = (long long)st.gx * st.gy * st.gz;
      const int vb = (int)(g.y * total / st.groups), ve = (int)((g.y + 1) * total / st.groups);
      const bool lead = (threadIdx.x & (st.threads - 1)) == 0;
      const unsigned long long* args = vbp::args + st.arg0;
      for (int v = vb + sub; v < ve; v += st.subs) {
        if (lead) vbp::task.v[sub] = v;
        vbp::sync();
        switch (st.body) {
$CASES        }
        vbp::sync();  // the sub-block's shared memory and task record are free again
      }
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      __threadfence();
      atomicAdd(state + g.x, 1u);
    }
  }
  if (threadIdx.x == 0) {
    __threadfence();
    if (atomicAdd(state + $NSTAGES, 1u) == gridDim.x - 1) {
      for (int i = 0; i <= $NSTAGES; ++i) state[i] = 0;
      __threadfence();
    }
  }
}
)CUDA";
  absl::StrReplaceAll({{"$THREADS", absl::StrCat(p.threads)},
                       {"$MINB", absl::StrCat(p.blocks_per_sm)},
                       {"$NAME", kPersistentKernelName},
                       {"$NSTAGES", absl::StrCat(n)},
                       {"$CASES", cases}},
                      &kernel);
  src += kernel;
  return src;
}

}  // namespace vibrant::codegen
