#include "runtime/cuda/nccl.h"

#include <dlfcn.h>

#include <cstdlib>
#include <cstring>
#include <mutex>
#include <tuple>
#include <type_traits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "runtime/cuda/dynlib.h"
#include "runtime/cuda/nccl_abi.h"

namespace vibrant {

struct NcclLib {
  void* dl = nullptr;
  std::string path;
  int version = 0;
  nccl_abi::GetVersionFn get_version = nullptr;
  nccl_abi::GetUniqueIdFn get_unique_id = nullptr;
  nccl_abi::CommInitRankFn comm_init_rank = nullptr;
  nccl_abi::CommDestroyFn comm_destroy = nullptr;
  nccl_abi::CommAbortFn comm_abort = nullptr;
  nccl_abi::CommGetAsyncErrorFn comm_get_async_error = nullptr;
  nccl_abi::GetErrorStringFn get_error_string = nullptr;
  nccl_abi::GetLastErrorFn get_last_error = nullptr;  // optional (NCCL >= 2.13)
  nccl_abi::AllReduceFn all_reduce = nullptr;
  nccl_abi::AllGatherFn all_gather = nullptr;
  nccl_abi::GroupStartFn group_start = nullptr;
  nccl_abi::GroupEndFn group_end = nullptr;
  // Never dlclose'd: NCCL keeps process-wide state (its bootstrap threads).
};

namespace {

std::string ResultText(const NcclLib& lib, int r) {
  const char* name = lib.get_error_string != nullptr
                         ? lib.get_error_string(static_cast<nccl_abi::Result>(r))
                         : nullptr;
  return name != nullptr ? absl::StrCat(name, " (ncclResult ", r, ")")
                         : absl::StrCat("ncclResult ", r);
}

// NCCL's result as a status naming the call. `comm`, when given, adds
// ncclGetLastError's message (what NCCL logged about the failure).
absl::Status NcclStatus(const NcclLib& lib, int r, const char* call, void* comm) {
  if (r == nccl_abi::kSuccess) return absl::OkStatus();
  std::string msg = absl::StrCat("NCCL: ", call, " failed: ", ResultText(lib, r));
  if (lib.get_last_error != nullptr) {
    const char* last = lib.get_last_error(static_cast<nccl_abi::comm_t>(comm));
    if (last != nullptr && last[0] != '\0') absl::StrAppend(&msg, ": ", last);
  }
  switch (r) {
    case nccl_abi::kInvalidArgument:
    case nccl_abi::kInvalidUsage:
      return absl::InvalidArgumentError(msg);
    case nccl_abi::kInProgress:
    case nccl_abi::kSystemError:
    case nccl_abi::kRemoteError:
      return absl::UnavailableError(msg);
    default:
      return absl::InternalError(msg);
  }
}

// NVLink multicast off unless the user chose otherwise (see nccl.h). NCCL
// reads it when a communicator is created; setting it here, when the library
// loads (normally once, before any thread of NCCL's or ours reads the
// environment), keeps setenv away from concurrent getenv calls.
void KeepNvlsOff() { setenv("NCCL_NVLS_ENABLE", "0", /*overwrite=*/0); }

}  // namespace

std::vector<std::string> DefaultNcclNames() {
  if (const char* env = std::getenv(kNcclLibraryEnv); env != nullptr && env[0] != '\0') {
    return {std::string(env)};
  }
  std::vector<std::string> names = {"libnccl.so.2", "libnccl.so"};
#ifdef VIBRANT_NCCL_DIR
  names.push_back(std::string(VIBRANT_NCCL_DIR) + "/libnccl.so.2");
#endif
  return names;
}

NcclVersion DecodeNcclVersion(int code) {
  NcclVersion v;
  v.code = code;
  if (code >= 10000) {  // NCCL >= 2.9: X*10000 + Y*100 + Z
    v.major = code / 10000;
    v.minor = (code % 10000) / 100;
  } else {  // X*1000 + Y*100 + Z
    v.major = code / 1000;
    v.minor = (code % 1000) / 100;
  }
  v.patch = code % 100;
  return v;
}

absl::StatusOr<std::shared_ptr<const NcclLib>> LoadNccl(const std::vector<std::string>& names) {
  const DlOpened opened = DlOpenFirst(names);
  void* dl = opened.dl;
  const std::string& path = opened.path;
  if (dl == nullptr) {
    return absl::NotFoundError(absl::StrCat(
        "NCCL is not available (tensor parallelism across GPUs needs libnccl.so.2; set ",
        kNcclLibraryEnv, " to its path); tried ",
        opened.tried));
  }
  auto lib = std::make_shared<NcclLib>();
  lib->dl = dl;
  lib->path = path;
  DlSymbols sym(dl);
  sym(&lib->get_version, "ncclGetVersion");
  sym(&lib->get_unique_id, "ncclGetUniqueId");
  sym(&lib->comm_init_rank, "ncclCommInitRank");
  sym(&lib->comm_destroy, "ncclCommDestroy");
  sym(&lib->comm_abort, "ncclCommAbort");
  sym(&lib->comm_get_async_error, "ncclCommGetAsyncError");
  sym(&lib->get_error_string, "ncclGetErrorString");
  sym(&lib->all_reduce, "ncclAllReduce");
  sym(&lib->all_gather, "ncclAllGather");
  sym(&lib->group_start, "ncclGroupStart");
  sym(&lib->group_end, "ncclGroupEnd");
  // Optional: a better error message only.
  lib->get_last_error = reinterpret_cast<nccl_abi::GetLastErrorFn>(dlsym(dl, "ncclGetLastError"));
  if (!sym.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("NCCL: ", path, " lacks ", sym.missing()));
  }
  int code = 0;
  if (absl::Status s = NcclStatus(*lib, lib->get_version(&code), "ncclGetVersion", nullptr);
      !s.ok()) {
    return s;
  }
  const NcclVersion v = DecodeNcclVersion(code);
  if (v.major != 2 || v.minor < 4) {
    // nccl_abi.h is NCCL 2's ABI; ncclCommAbort and ncclCommGetAsyncError came in 2.4.
    return absl::FailedPreconditionError(
        absl::StrCat("NCCL: ", path, " is version ", v.major, ".", v.minor, ".", v.patch, " (code ",
                     code, "); Vibrant needs NCCL 2.4 or later within major 2"));
  }
  lib->version = code;
  KeepNvlsOff();
  return std::shared_ptr<const NcclLib>(std::move(lib));
}

absl::StatusOr<std::shared_ptr<const NcclLib>> LoadNccl() {
  static std::once_flag once;
  static absl::StatusOr<std::shared_ptr<const NcclLib>>* loaded = nullptr;
  std::call_once(once, [] {
    loaded = new absl::StatusOr<std::shared_ptr<const NcclLib>>(LoadNccl(DefaultNcclNames()));
  });
  return *loaded;
}

absl::Status NcclAvailable() { return LoadNccl().status(); }

NcclVersion GetNcclVersion(const NcclLib& lib) { return DecodeNcclVersion(lib.version); }

std::string NcclDescribe(const NcclLib& lib) {
  const NcclVersion v = GetNcclVersion(lib);
  return absl::StrCat(lib.path, ", NCCL ", v.major, ".", v.minor, ".", v.patch);
}

absl::StatusOr<NcclUniqueId> NcclGetUniqueId(const NcclLib& lib) {
  nccl_abi::UniqueId raw{};
  if (absl::Status s = NcclStatus(lib, lib.get_unique_id(&raw), "ncclGetUniqueId", nullptr);
      !s.ok()) {
    return s;
  }
  NcclUniqueId id;
  static_assert(sizeof(raw) == std::tuple_size_v<NcclUniqueId>);
  std::memcpy(id.data(), raw.internal, id.size());
  return id;
}

absl::Status NcclGroupStart(const NcclLib& lib) {
  return NcclStatus(lib, lib.group_start(), "ncclGroupStart", nullptr);
}

absl::Status NcclGroupEnd(const NcclLib& lib) {
  return NcclStatus(lib, lib.group_end(), "ncclGroupEnd", nullptr);
}

absl::StatusOr<std::unique_ptr<NcclComm>> NcclComm::Init(std::shared_ptr<const NcclLib> lib,
                                                         int rank, int world_size,
                                                         const NcclUniqueId& id) {
  if (lib == nullptr) return absl::InvalidArgumentError("NCCL: no library");
  if (world_size < 1 || rank < 0 || rank >= world_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("NCCL: rank ", rank, " is outside a world of size ", world_size));
  }
  KeepNvlsOff();  // normally done already by LoadNccl; a no-op then
  nccl_abi::UniqueId raw;
  std::memcpy(raw.internal, id.data(), id.size());
  std::unique_ptr<NcclComm> c(new NcclComm());
  c->lib_ = std::move(lib);
  c->rank_ = rank;
  c->world_size_ = world_size;
  nccl_abi::comm_t comm = nullptr;
  const int r = c->lib_->comm_init_rank(&comm, world_size, raw, rank);
  if (r != nccl_abi::kSuccess) {
    absl::Status s = NcclStatus(*c->lib_, r, "ncclCommInitRank", comm);
    if (comm != nullptr) c->lib_->comm_abort(comm);
    return absl::Status(s.code(),
                        absl::StrCat(s.message(), " (rank ", rank, " of ", world_size, ")"));
  }
  c->comm_ = comm;
  return c;
}

NcclComm::~NcclComm() { (void)Destroy(); }

absl::Status NcclComm::Check(int result, const char* call) const {
  absl::Status s = NcclStatus(*lib_, result, call, comm_);
  if (s.ok()) return s;
  return absl::Status(s.code(),
                      absl::StrCat(s.message(), " (rank ", rank_, " of ", world_size_, ")"));
}

absl::Status NcclComm::AllReduceSumF32(const float* send, float* recv, size_t count,
                                       cudaStream_t stream) {
  if (comm_ == nullptr) return absl::FailedPreconditionError("NCCL: communicator destroyed");
  return Check(lib_->all_reduce(send, recv, count, nccl_abi::kFloat32, nccl_abi::kSum,
                                static_cast<nccl_abi::comm_t>(comm_), stream),
               "ncclAllReduce");
}

absl::Status NcclComm::AllGatherF32(const float* send, float* recv, size_t send_count,
                                    cudaStream_t stream) {
  if (comm_ == nullptr) return absl::FailedPreconditionError("NCCL: communicator destroyed");
  return Check(lib_->all_gather(send, recv, send_count, nccl_abi::kFloat32,
                                static_cast<nccl_abi::comm_t>(comm_), stream),
               "ncclAllGather");
}

absl::Status NcclComm::AsyncError() const {
  if (comm_ == nullptr) return absl::FailedPreconditionError("NCCL: communicator destroyed");
  nccl_abi::Result async = nccl_abi::kSuccess;
  if (absl::Status s =
          Check(lib_->comm_get_async_error(static_cast<nccl_abi::comm_t>(comm_), &async),
                "ncclCommGetAsyncError");
      !s.ok()) {
    return s;
  }
  return Check(async, "a collective (ncclCommGetAsyncError)");
}

absl::Status NcclComm::Destroy() {
  if (comm_ == nullptr) return absl::OkStatus();
  nccl_abi::comm_t comm = static_cast<nccl_abi::comm_t>(comm_);
  comm_ = nullptr;
  const int r = lib_->comm_destroy(comm);
  return NcclStatus(*lib_, r, "ncclCommDestroy", nullptr);
}

absl::Status NcclComm::Abort() {
  if (comm_ == nullptr) return absl::OkStatus();
  nccl_abi::comm_t comm = static_cast<nccl_abi::comm_t>(comm_);
  comm_ = nullptr;
  return NcclStatus(*lib_, lib_->comm_abort(comm), "ncclCommAbort", nullptr);
}

}  // namespace vibrant
