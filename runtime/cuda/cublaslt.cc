#include "runtime/cuda/cublaslt.h"

#include <cublasLt.h>
#include <cuda_runtime_api.h>
#include <dlfcn.h>

#include <mutex>
#include <type_traits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "runtime/cuda/dynlib.h"
#include "runtime/cuda/device.h"

namespace vibrant {

struct CublasLtLib {
  void* dl = nullptr;
  std::string path;
  decltype(&cublasLtCreate) create = nullptr;
  decltype(&cublasLtDestroy) destroy = nullptr;
  decltype(&cublasLtGetVersion) get_version = nullptr;
  decltype(&cublasLtGetStatusName) status_name = nullptr;
  decltype(&cublasLtMatmulDescCreate) desc_create = nullptr;
  decltype(&cublasLtMatmulDescDestroy) desc_destroy = nullptr;
  decltype(&cublasLtMatmulDescSetAttribute) desc_set = nullptr;
  decltype(&cublasLtMatrixLayoutCreate) layout_create = nullptr;
  decltype(&cublasLtMatrixLayoutDestroy) layout_destroy = nullptr;
  decltype(&cublasLtMatmulPreferenceCreate) pref_create = nullptr;
  decltype(&cublasLtMatmulPreferenceDestroy) pref_destroy = nullptr;
  decltype(&cublasLtMatmulPreferenceSetAttribute) pref_set = nullptr;
  decltype(&cublasLtMatmulAlgoGetHeuristic) heuristic = nullptr;
  decltype(&cublasLtMatmul) matmul = nullptr;
  // The library is never dlclose'd: cuBLASLt registers process-wide state.
};

namespace {

std::string StatusText(const CublasLtLib& lib, cublasStatus_t s) {
  const char* name = lib.status_name != nullptr ? lib.status_name(s) : nullptr;
  return name != nullptr ? absl::StrCat(name, " (", static_cast<int>(s), ")")
                         : absl::StrCat("cuBLAS status ", static_cast<int>(s));
}

absl::Status Check(const CublasLtLib& lib, cublasStatus_t s, const std::string& call,
                   const std::string& what = "") {
  if (s == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  std::string msg = absl::StrCat("cuBLASLt: ", call, " failed: ", StatusText(lib, s));
  if (!what.empty()) absl::StrAppend(&msg, " (", what, ")");
  return absl::InternalError(msg);
}

std::string ShapeText(const GemmShape& s) {
  return absl::StrCat("M=", s.M, " N=", s.N, " K=", s.K, " lda=", s.lda, " ldb=", s.ldb,
                      " ldo=", s.ldo, s.bias ? " bias" : "", " align a/b/out/bias=", s.align_a,
                      "/", s.align_b, "/", s.align_out, "/", s.align_bias);
}

}  // namespace

std::vector<std::string> DefaultCublasLtNames() {
  std::vector<std::string> names = {"libcublasLt.so.13", "libcublasLt.so"};
#ifdef VIBRANT_CUBLASLT_DIR
  names.push_back(std::string(VIBRANT_CUBLASLT_DIR) + "/libcublasLt.so.13");
#endif
  return names;
}

absl::StatusOr<std::shared_ptr<const CublasLtLib>> LoadCublasLt(
    const std::vector<std::string>& names) {
  const DlOpened opened = DlOpenFirst(names);
  void* dl = opened.dl;
  const std::string& path = opened.path;
  if (dl == nullptr) {
    return absl::UnavailableError(absl::StrCat(
        "cuBLASLt is not available (the prefill GEMM path needs the CUDA toolkit's "
        "libcublasLt); tried ",
        opened.tried));
  }
  auto lib = std::make_shared<CublasLtLib>();
  lib->dl = dl;
  lib->path = path;
  DlSymbols sym(dl);
  sym(&lib->create, "cublasLtCreate");
  sym(&lib->destroy, "cublasLtDestroy");
  sym(&lib->get_version, "cublasLtGetVersion");
  sym(&lib->desc_create, "cublasLtMatmulDescCreate");
  sym(&lib->desc_destroy, "cublasLtMatmulDescDestroy");
  sym(&lib->desc_set, "cublasLtMatmulDescSetAttribute");
  sym(&lib->layout_create, "cublasLtMatrixLayoutCreate");
  sym(&lib->layout_destroy, "cublasLtMatrixLayoutDestroy");
  sym(&lib->pref_create, "cublasLtMatmulPreferenceCreate");
  sym(&lib->pref_destroy, "cublasLtMatmulPreferenceDestroy");
  sym(&lib->pref_set, "cublasLtMatmulPreferenceSetAttribute");
  sym(&lib->heuristic, "cublasLtMatmulAlgoGetHeuristic");
  sym(&lib->matmul, "cublasLtMatmul");
  // Optional: error names only.
  lib->status_name =
      reinterpret_cast<decltype(&cublasLtGetStatusName)>(dlsym(dl, "cublasLtGetStatusName"));
  if (!sym.ok()) {
    return absl::UnavailableError(absl::StrCat("cuBLASLt: ", path, " lacks ",
                                               sym.missing()));
  }
  return std::shared_ptr<const CublasLtLib>(std::move(lib));
}

absl::StatusOr<std::shared_ptr<const CublasLtLib>> LoadCublasLt() {
  static std::once_flag once;
  static absl::StatusOr<std::shared_ptr<const CublasLtLib>>* loaded = nullptr;
  std::call_once(once, [] {
    loaded = new absl::StatusOr<std::shared_ptr<const CublasLtLib>>(
        LoadCublasLt(DefaultCublasLtNames()));
  });
  return *loaded;
}

std::string CublasLtDescribe(const CublasLtLib& lib) {
  return absl::StrCat(lib.path, ", version ", lib.get_version());
}

absl::Status CublasLtAvailable() { return LoadCublasLt().status(); }

uint32_t PointerAlignment(const void* p) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  uint32_t align = 1;
  while (align < 256 && (a & (2 * align - 1)) == 0) align *= 2;
  return align;
}

// One shape's descriptors and chosen algorithm.
struct RowMajorGemm::Plan {
  const CublasLtLib* lib = nullptr;
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;  // cuBLAS's A', B', D'
  cublasLtMatmulAlgo_t algo{};
  size_t workspace = 0;

  ~Plan() {
    if (a != nullptr) lib->layout_destroy(a);
    if (b != nullptr) lib->layout_destroy(b);
    if (d != nullptr) lib->layout_destroy(d);
    if (desc != nullptr) lib->desc_destroy(desc);
  }
};

absl::StatusOr<std::unique_ptr<RowMajorGemm>> RowMajorGemm::Create(
    std::shared_ptr<const CublasLtLib> lib, int64_t workspace_bytes) {
  if (lib == nullptr) return absl::InvalidArgumentError("cuBLASLt: no library");
  std::unique_ptr<RowMajorGemm> g(new RowMajorGemm());
  g->lib_ = std::move(lib);
  cublasLtHandle_t h = nullptr;
  if (absl::Status s = Check(*g->lib_, g->lib_->create(&h), "cublasLtCreate"); !s.ok()) return s;
  g->handle_ = h;
  if (workspace_bytes > 0) {
    cudaError_t e = cudaMalloc(&g->workspace_, static_cast<size_t>(workspace_bytes));
    if (e != cudaSuccess) {
      cudaGetLastError();
      g->workspace_ = nullptr;
      return absl::ResourceExhaustedError(
          absl::StrCat("cuBLASLt: allocating a workspace of ", HumanBytes(workspace_bytes),
                       ": ", cudaGetErrorString(e)));
    }
    g->workspace_bytes_ = workspace_bytes;
  }
  return g;
}

RowMajorGemm::~RowMajorGemm() {
  plans_.clear();
  if (workspace_ != nullptr) cudaFree(workspace_);
  if (handle_ != nullptr) lib_->destroy(static_cast<cublasLtHandle_t>(handle_));
}

absl::StatusOr<RowMajorGemm::Plan*> RowMajorGemm::GetPlan(const GemmShape& s,
                                                          const void* bias) {
  const auto key = s.Key();
  if (auto it = plans_.find(key); it != plans_.end()) return it->second.get();
  if (auto it = failed_.find(key); it != failed_.end()) return it->second;
  const CublasLtLib& L = *lib_;
  auto fail = [&](absl::Status st) {
    failed_[key] = st;
    return st;
  };
  if (s.M < 1 || s.N < 1 || s.K < 1 || s.lda < s.K || s.ldb < s.K || s.ldo < s.N) {
    return fail(absl::InvalidArgumentError(
        absl::StrCat("cuBLASLt: invalid GEMM shape ", ShapeText(s))));
  }
  auto plan = std::make_unique<Plan>();
  plan->lib = &L;
  const std::string where = ShapeText(s);
  auto chk = [&](cublasStatus_t st, const char* call) { return Check(L, st, call, where); };
  absl::Status st = chk(L.desc_create(&plan->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F),
                        "cublasLtMatmulDescCreate");
  // D' (N x M) = op(B') (N x K) · A' (K x M): cuBLAS's "A" is our b, transposed.
  const int32_t op_t = CUBLAS_OP_T, op_n = CUBLAS_OP_N;
  if (st.ok()) {
    st = chk(L.desc_set(plan->desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_t, sizeof(op_t)),
             "cublasLtMatmulDescSetAttribute(TRANSA)");
  }
  if (st.ok()) {
    st = chk(L.desc_set(plan->desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_n, sizeof(op_n)),
             "cublasLtMatmulDescSetAttribute(TRANSB)");
  }
  if (st.ok() && s.bias) {
    // The bias has D's type (f32) by default (CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE).
    const uint32_t epi = CUBLASLT_EPILOGUE_BIAS;
    st = chk(L.desc_set(plan->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)),
             "cublasLtMatmulDescSetAttribute(EPILOGUE)");
    if (st.ok()) {
      st = chk(L.desc_set(plan->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)),
               "cublasLtMatmulDescSetAttribute(BIAS_POINTER)");
    }
  }
  // Column-major layouts: rows, cols, ld.
  if (st.ok()) {
    st = chk(L.layout_create(&plan->a, CUDA_R_16F, static_cast<uint64_t>(s.K),
                             static_cast<uint64_t>(s.N), s.ldb),
             "cublasLtMatrixLayoutCreate(weights)");
  }
  if (st.ok()) {
    st = chk(L.layout_create(&plan->b, CUDA_R_16F, static_cast<uint64_t>(s.K),
                             static_cast<uint64_t>(s.M), s.lda),
             "cublasLtMatrixLayoutCreate(activations)");
  }
  if (st.ok()) {
    st = chk(L.layout_create(&plan->d, CUDA_R_32F, static_cast<uint64_t>(s.N),
                             static_cast<uint64_t>(s.M), s.ldo),
             "cublasLtMatrixLayoutCreate(output)");
  }
  if (!st.ok()) return fail(st);
  cublasLtMatmulPreference_t pref = nullptr;
  st = chk(L.pref_create(&pref), "cublasLtMatmulPreferenceCreate");
  if (!st.ok()) return fail(st);
  const uint64_t ws = static_cast<uint64_t>(workspace_bytes_);
  // cuBLAS's A is our b, its B our a, its C and D our out.
  const uint32_t al_a = s.align_b, al_b = s.align_a, al_c = s.align_out;
  st = chk(L.pref_set(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)),
           "cublasLtMatmulPreferenceSetAttribute(MAX_WORKSPACE_BYTES)");
  if (st.ok()) {
    st = chk(L.pref_set(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_a, sizeof(al_a)),
             "cublasLtMatmulPreferenceSetAttribute(MIN_ALIGNMENT_A_BYTES)");
  }
  if (st.ok()) {
    st = chk(L.pref_set(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_b, sizeof(al_b)),
             "cublasLtMatmulPreferenceSetAttribute(MIN_ALIGNMENT_B_BYTES)");
  }
  if (st.ok()) {
    st = chk(L.pref_set(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_c, sizeof(al_c)),
             "cublasLtMatmulPreferenceSetAttribute(MIN_ALIGNMENT_C_BYTES)");
  }
  if (st.ok()) {
    st = chk(L.pref_set(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_c, sizeof(al_c)),
             "cublasLtMatmulPreferenceSetAttribute(MIN_ALIGNMENT_D_BYTES)");
  }
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  if (st.ok()) {
    st = chk(L.heuristic(static_cast<cublasLtHandle_t>(handle_), plan->desc, plan->a, plan->b,
                         plan->d, plan->d, pref, 1, &result, &found),
             "cublasLtMatmulAlgoGetHeuristic");
  }
  L.pref_destroy(pref);
  if (st.ok() && (found < 1 || result.state != CUBLAS_STATUS_SUCCESS)) {
    st = absl::UnimplementedError(
        absl::StrCat("cuBLASLt: cublasLtMatmulAlgoGetHeuristic found no algorithm (",
                     found < 1 ? std::string("0 results") : StatusText(L, result.state), ") for ",
                     where));
  }
  if (!st.ok()) return fail(st);
  plan->algo = result.algo;
  plan->workspace = result.workspaceSize;
  Plan* p = plan.get();
  plans_[key] = std::move(plan);
  return p;
}

absl::Status RowMajorGemm::Prepare(const GemmShape& shape, const void* bias_for_alignment) {
  return GetPlan(shape, bias_for_alignment).status();
}

absl::Status RowMajorGemm::Run(const GemmShape& shape, const void* a, const void* b,
                               const float* bias, float* out, void* stream) {
  GemmShape s = shape;  // the algorithm must suit these very pointers
  s.align_a = PointerAlignment(a);
  s.align_b = PointerAlignment(b);
  s.align_out = PointerAlignment(out);
  s.align_bias = bias != nullptr ? PointerAlignment(bias) : 256;
  if ((bias != nullptr) != s.bias) {
    return absl::InvalidArgumentError("cuBLASLt: bias pointer and GemmShape::bias disagree");
  }
  absl::StatusOr<Plan*> p = GetPlan(s, bias);
  if (!p.ok()) return p.status();
  const CublasLtLib& L = *lib_;
  const std::string where = ShapeText(s);
  if (s.bias) {
    const void* bp = bias;
    if (absl::Status st = Check(L,
                                L.desc_set((*p)->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bp,
                                           sizeof(bp)),
                                "cublasLtMatmulDescSetAttribute(BIAS_POINTER)", where);
        !st.ok()) {
      return st;
    }
  }
  const float alpha = 1.0f, beta = 0.0f;
  return Check(L,
               L.matmul(static_cast<cublasLtHandle_t>(handle_), (*p)->desc, &alpha, b, (*p)->a,
                        a, (*p)->b, &beta, out, (*p)->d, out, (*p)->d, &(*p)->algo, workspace_,
                        workspace_bytes_, static_cast<cudaStream_t>(stream)),
               "cublasLtMatmul", where);
}

}  // namespace vibrant
