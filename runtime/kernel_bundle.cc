#include "runtime/kernel_bundle.h"

#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace vibrant {
namespace {

constexpr char kMagic[8] = {'V', 'B', 'K', 'E', 'R', 'N', 'E', 'L'};
constexpr uint32_t kVersion = 1;

void PutU32(std::string& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
void PutU64(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
void PutString(std::string& out, const std::string& s) {
  PutU64(out, s.size());
  out += s;
}

}  // namespace

std::string SerializeKernelBundle(const KernelBundle& b) {
  std::string out(kMagic, sizeof(kMagic));
  PutU32(out, kVersion);
  PutU64(out, b.source_hash);
  PutString(out, b.arch);
  PutString(out, b.nvrtc_version);
  PutString(out, b.cubin);
  PutString(out, b.ptx);
  return out;
}

absl::StatusOr<KernelBundle> ParseKernelBundle(absl::Span<const uint8_t> data,
                                               const std::string& where) {
  size_t at = 0;
  auto fail = [&](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": at offset ", at, ": ", what));
  };
  auto need = [&](size_t n, const char* what) -> absl::Status {
    if (data.size() - at < n) {
      return fail(absl::StrCat("truncated: ", what, " needs ", n, " bytes, ", data.size() - at,
                               " left"));
    }
    return absl::OkStatus();
  };
  auto u64 = [&](uint64_t* v, const char* what) -> absl::Status {
    if (absl::Status s = need(8, what); !s.ok()) return s;
    *v = 0;
    for (int i = 0; i < 8; ++i) *v |= static_cast<uint64_t>(data[at + i]) << (8 * i);
    at += 8;
    return absl::OkStatus();
  };
  auto str = [&](std::string* s, const char* what) -> absl::Status {
    uint64_t n;
    if (absl::Status st = u64(&n, what); !st.ok()) return st;
    if (n > data.size() - at) {
      return fail(absl::StrCat("truncated: ", what, " of ", n, " bytes, ", data.size() - at,
                               " left"));
    }
    s->assign(reinterpret_cast<const char*>(data.data()) + at, n);
    at += n;
    return absl::OkStatus();
  };
  if (absl::Status s = need(12, "header"); !s.ok()) return s;
  if (std::memcmp(data.data(), kMagic, sizeof(kMagic)) != 0) {
    return fail("not a kernel bundle (bad magic)");
  }
  at = 8;
  uint32_t version = 0;
  for (int i = 0; i < 4; ++i) version |= static_cast<uint32_t>(data[at + i]) << (8 * i);
  if (version != kVersion) {
    return fail(absl::StrCat("kernel bundle version ", version, ", this build reads ", kVersion));
  }
  at += 4;
  KernelBundle b;
  if (absl::Status s = u64(&b.source_hash, "source hash"); !s.ok()) return s;
  if (absl::Status s = str(&b.arch, "arch"); !s.ok()) return s;
  if (absl::Status s = str(&b.nvrtc_version, "NVRTC version"); !s.ok()) return s;
  if (absl::Status s = str(&b.cubin, "CUBIN"); !s.ok()) return s;
  if (absl::Status s = str(&b.ptx, "PTX"); !s.ok()) return s;
  if (at != data.size()) return fail(absl::StrCat(data.size() - at, " trailing bytes"));
  if (b.cubin.empty() && b.ptx.empty()) return fail("neither CUBIN nor PTX");
  return b;
}

}  // namespace vibrant
