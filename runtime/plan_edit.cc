#include "runtime/plan_edit.h"

#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "runtime/plan.h"

namespace vibrant {
namespace {

uint32_t LoadU32(const uint8_t* p) {
  return uint32_t{p[0]} | uint32_t{p[1]} << 8 | uint32_t{p[2]} << 16 | uint32_t{p[3]} << 24;
}
uint64_t LoadU64(const uint8_t* p) { return uint64_t{LoadU32(p)} | uint64_t{LoadU32(p + 4)} << 32; }
void PutU32(std::string& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
void PutU64(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

}  // namespace

absl::StatusOr<std::vector<RawPlanSection>> SplitPlanSections(absl::Span<const uint8_t> data) {
  if (data.size() < kPlanHeaderBytes || std::memcmp(data.data(), kPlanMagic, sizeof(kPlanMagic)) != 0) {
    return absl::InvalidArgumentError("not a plan (magic)");
  }
  const uint32_t count = LoadU32(data.data() + 12);
  if (count > kPlanMaxSections ||
      (data.size() - kPlanHeaderBytes) / kPlanSectionEntryBytes < count) {
    return absl::InvalidArgumentError(absl::StrCat("section table of ", count, " entries does not fit"));
  }
  std::vector<RawPlanSection> out;
  for (uint32_t i = 0; i < count; ++i) {
    const uint8_t* e = data.data() + kPlanHeaderBytes + kPlanSectionEntryBytes * i;
    const uint64_t offset = LoadU64(e + 8), size = LoadU64(e + 16);
    if (offset > data.size() || size > data.size() - offset) {
      return absl::InvalidArgumentError(absl::StrCat("section ", i, " lies outside the data"));
    }
    RawPlanSection s;
    s.kind = LoadU32(e);
    s.flags = LoadU32(e + 4);
    s.bytes.assign(reinterpret_cast<const char*>(data.data() + offset), size);
    out.push_back(std::move(s));
  }
  return out;
}

std::string AssemblePlan(const std::vector<RawPlanSection>& sections, uint32_t version) {
  std::string out(kPlanMagic, sizeof(kPlanMagic));
  PutU32(out, version);
  PutU32(out, static_cast<uint32_t>(sections.size()));
  uint64_t pos = kPlanHeaderBytes + kPlanSectionEntryBytes * sections.size();
  std::vector<uint64_t> offsets;
  for (const RawPlanSection& s : sections) {
    pos = (pos + 63) / 64 * 64;
    offsets.push_back(pos);
    PutU32(out, s.kind);
    PutU32(out, s.flags);
    PutU64(out, pos);
    PutU64(out, s.bytes.size());
    PutU64(out, Fnv1a64(absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(s.bytes.data()),
                                                  s.bytes.size())));
    pos += s.bytes.size();
  }
  for (size_t i = 0; i < sections.size(); ++i) {
    out.resize(offsets[i], '\0');
    out += sections[i].bytes;
  }
  return out;
}

RawPlanSection* FindPlanSection(std::vector<RawPlanSection>& sections, uint32_t kind) {
  for (RawPlanSection& s : sections) {
    if (s.kind == kind) return &s;
  }
  return nullptr;
}

}  // namespace vibrant
