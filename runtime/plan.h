// plan.bin: the compiled form of a model. `vibrantc compile` writes it,
// `vibrant-run` loads it.
//
// Layout (every integer little-endian):
//
//   offset 0   char[8]  magic "VBRNTPLN"
//          8   u32      format version (kPlanFormatVersion)
//         12   u32      section count N (at most kPlanMaxSections)
//         16   N x 32-byte section entries:
//                u32 kind, u32 flags, u64 offset, u64 size, u64 checksum
//         ...  section payloads. Each lies inside the file, after the section
//              table, without overlapping another; its offset is a multiple
//              of 8 (64 for EMBEDDED_GGUF, so that the embedded file's tensor
//              data keeps its alignment in the memory-mapped plan).
//
// checksum = FNV-1a 64 of the section's bytes. The loader verifies it for
// every section except EMBEDDED_GGUF (gigabytes: too slow to hash at every
// start; the GGUF parser validates that section's structure instead).
//
// Flags: bit 0 (kPlanSectionOptional) lets a reader that does not know the
// kind skip the section; any other kind that the reader does not know is an
// error. All other flag bits must be zero.
//
// Sections:
//   GRAPH          ir::SerializeGraph of the graph after the compiler's passes.
//   OPTIONS        the compile options as "key=value\n" lines (device,
//                  max_tokens, n_ctx, cache_type_k, cache_type_v, all_logits, weights).
//   MODEL_REF      where the weights are: u64 file size, u64 fingerprint,
//                  u32 path length, the absolute path (UTF-8, no terminator).
//   EMBEDDED_GGUF  the whole GGUF file, byte for byte.
//   KERNELS        compiled GPU kernels (codegen/kernel_bundle.h: CUBIN + PTX
//                  for one architecture and the hash of their source); plans
//                  for the cuda device carry it.
//   DISPATCH       the dispatch table (runtime/dispatch.h): every launch of a
//                  step of a plan for the cuda device, with its kernel,
//                  geometry and arguments; cuda plans carry it next to KERNELS.
//   MEMORY_PLAN    reserved.
// Format version 2 (this one) added DISPATCH and the graph's kernel variants;
// plans of version 1 are refused with a request to recompile.
// A plan has GRAPH and OPTIONS, and exactly one of MODEL_REF and
// EMBEDDED_GGUF.
//
// Weights are referenced, not copied, by default. A plan refers to the GGUF by
// absolute path plus a fingerprint (its size and a hash of its header,
// metadata and tensor table), so compiling takes no time or disk space
// proportional to the model, and loading costs one hash of the GGUF's head
// (kilobytes to a few megabytes, never the tensor data). A GGUF that was moved,
// deleted, or rewritten since compile is a named error at load; the one case
// not detected is a same-size change to tensor bytes alone (the data region is
// not hashed: doing so would read the whole model at every start).
// `vibrantc compile --embed-weights` instead copies the GGUF into the plan,
// which then stands alone (copy it to another machine, delete the GGUF); the
// runtime parses the embedded copy in place from the memory-mapped plan.
//
// Errors name the file, the section and the byte offset:
//   "plan.bin: section GRAPH at offset 4096: checksum mismatch (file is corrupted)"
//   "plan.bin: truncated: section table needs 96 bytes at offset 16, file has 40"
#ifndef VIBRANT_RUNTIME_PLAN_H_
#define VIBRANT_RUNTIME_PLAN_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "frontends/gguf/gguf.h"
#include "ir/graph.h"

namespace vibrant {
namespace io {
class MappedFile;
}  // namespace io

inline constexpr char kPlanMagic[8] = {'V', 'B', 'R', 'N', 'T', 'P', 'L', 'N'};
inline constexpr uint32_t kPlanFormatVersion = 2;
inline constexpr uint32_t kPlanMaxSections = 256;
inline constexpr uint64_t kPlanHeaderBytes = 16;
inline constexpr uint64_t kPlanSectionEntryBytes = 32;

enum class PlanSectionKind : uint32_t {
  kGraph = 1,
  kModelRef = 2,
  kEmbeddedGguf = 3,
  kOptions = 4,
  kMemoryPlan = 5,  // reserved
  kKernels = 6,
  kDispatch = 7,
};
// "GRAPH", "MODEL_REF", ..., or "kind 77" for a kind this build does not know.
std::string PlanSectionName(uint32_t kind);

inline constexpr uint32_t kPlanSectionOptional = 1u << 0;

// FNV-1a 64. Pass a previous result as `h` to hash data in pieces.
inline constexpr uint64_t kFnv1a64Offset = 0xcbf29ce484222325ull;
uint64_t Fnv1a64(absl::Span<const uint8_t> data, uint64_t h = kFnv1a64Offset);

// Where a plan's weights live when they are not embedded.
struct ModelRef {
  std::string path;  // absolute
  uint64_t size = 0;
  uint64_t fingerprint = 0;
};

// The fingerprint of a GGUF: FNV-1a 64 of bytes [0, data_offset) (header,
// metadata, tensor infos and the padding up to the data) followed by the file
// size as a u64.
uint64_t GgufFingerprint(const GgufFile& file);
// The reference to `file` (its absolute, symlink-resolved path).
absl::StatusOr<ModelRef> MakeModelRef(const GgufFile& file);

// The compile options, as recorded in the OPTIONS section, in order.
using PlanOptions = std::vector<std::pair<std::string, std::string>>;

// What a plan holds, for the writer.
struct PlanContents {
  std::string graph;  // ir::SerializeGraph output
  PlanOptions options;
  // Exactly one of the two: a reference, or the GGUF's bytes (kept alive by
  // the caller until WritePlan returns).
  std::optional<ModelRef> model_ref;
  std::optional<absl::Span<const uint8_t>> embedded_gguf;
  // The KERNELS section's bytes, when the plan carries compiled kernels.
  std::optional<std::string> kernels;
  // The DISPATCH section's bytes (runtime/dispatch.h: Serialize).
  std::optional<std::string> dispatch;
  // Extra raw sections (kind, flags, bytes), written after the others. For
  // tests of forward compatibility and for later section kinds.
  std::vector<std::tuple<uint32_t, uint32_t, std::string>> extra_sections;
};

// Writes `contents` to `path` atomically: into a temporary file in the same
// directory, which is then renamed over `path`.
absl::Status WritePlan(const std::string& path, const PlanContents& contents);

class PlanFile {
 public:
  // Memory-maps `path` read-only and validates the header, the section table
  // and the checksums.
  static absl::StatusOr<std::unique_ptr<PlanFile>> Open(const std::string& path);
  // Same over a buffer the caller keeps alive. `name` appears in errors.
  static absl::StatusOr<std::unique_ptr<PlanFile>> FromBuffer(
      std::string name, absl::Span<const uint8_t> data);
  ~PlanFile();
  PlanFile(const PlanFile&) = delete;
  PlanFile& operator=(const PlanFile&) = delete;

  // The path or name errors use.
  const std::string& name() const { return name_; }
  uint32_t version() const { return version_; }
  absl::Span<const uint8_t> bytes() const { return data_; }

  absl::Span<const uint8_t> graph_bytes() const { return graph_; }
  const PlanOptions& options() const { return options_; }
  // The value of option `key`, or `dflt` when the plan does not record it.
  std::string Option(std::string_view key, std::string_view dflt = "") const;
  // Set when the weights are referenced.
  const std::optional<ModelRef>& model_ref() const { return model_ref_; }
  // Set when the weights are embedded.
  const std::optional<absl::Span<const uint8_t>>& embedded_gguf() const {
    return embedded_gguf_;
  }

  // The KERNELS section's bytes; empty when the plan has none.
  absl::Span<const uint8_t> kernels() const { return kernels_; }
  // The DISPATCH section's bytes; empty when the plan has none.
  absl::Span<const uint8_t> dispatch() const { return dispatch_; }

  // Deserializes the GRAPH section and validates it
  // (ValidateExecutableGraph: the memory plan, sizes).
  absl::StatusOr<ir::Graph> LoadGraph() const;
  // Opens the model: the embedded GGUF (parsed in place; this PlanFile must
  // outlive the result), or the referenced file after checking that it is
  // still the one the plan was compiled from.
  absl::StatusOr<std::unique_ptr<GgufFile>> OpenModel() const;

 private:
  PlanFile() = default;
  absl::Status Parse();

  std::string name_;
  std::unique_ptr<io::MappedFile> mapped_;  // set when opened from a path
  absl::Span<const uint8_t> data_;
  uint32_t version_ = 0;
  absl::Span<const uint8_t> graph_;
  PlanOptions options_;
  std::optional<ModelRef> model_ref_;
  std::optional<absl::Span<const uint8_t>> embedded_gguf_;
  absl::Span<const uint8_t> kernels_;
  absl::Span<const uint8_t> dispatch_;
};

}  // namespace vibrant

#endif  // VIBRANT_RUNTIME_PLAN_H_
