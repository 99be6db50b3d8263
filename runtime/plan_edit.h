// Taking a plan.bin apart and putting it back together, section by section,
// with fresh checksums: for tests that craft hostile plans (a memory plan
// edited so that values overlap, say) and for the structure-aware plan
// fuzzer, which mutates one section's bytes and must get past the checksums
// to reach the parsers behind them. Kind-agnostic: sections are opaque
// (kind, flags, bytes), so new kinds need nothing here.
#ifndef VIBRANT_RUNTIME_PLAN_EDIT_H_
#define VIBRANT_RUNTIME_PLAN_EDIT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace vibrant {

struct RawPlanSection {
  uint32_t kind = 0;
  uint32_t flags = 0;
  std::string bytes;
};

// The sections of `data` in table order. Checks only what it needs to copy
// them (the magic, the table and each section inside the data); no checksum,
// kind, flag, alignment or overlap checks: that is PlanFile's job.
absl::StatusOr<std::vector<RawPlanSection>> SplitPlanSections(absl::Span<const uint8_t> data);

// A plan file holding `sections` in this order: the header (magic,
// `version`), the table, then each payload at the next multiple of 64 bytes
// (zero padding), with each section's FNV-1a checksum computed here.
std::string AssemblePlan(const std::vector<RawPlanSection>& sections, uint32_t version);

// The first section of `kind`, or null.
RawPlanSection* FindPlanSection(std::vector<RawPlanSection>& sections, uint32_t kind);

}  // namespace vibrant

#endif  // VIBRANT_RUNTIME_PLAN_EDIT_H_
