#include "runtime/plan.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "frontends/io/file.h"
#include "ir/serialize.h"
#include "runtime/plan_validate.h"

namespace vibrant {
namespace {

constexpr uint64_t kFnv1a64Prime = 0x100000001b3ull;

absl::string_view AV(std::string_view s) { return absl::string_view(s.data(), s.size()); }

uint32_t LoadU32(const uint8_t* p) {
  return uint32_t{p[0]} | uint32_t{p[1]} << 8 | uint32_t{p[2]} << 16 | uint32_t{p[3]} << 24;
}
uint64_t LoadU64(const uint8_t* p) {
  return uint64_t{LoadU32(p)} | uint64_t{LoadU32(p + 4)} << 32;
}
void PutU32(std::string& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
void PutU64(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

uint64_t AlignUp(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

uint64_t SectionAlignment(uint32_t kind) {
  return kind == static_cast<uint32_t>(PlanSectionKind::kEmbeddedGguf) ? 64 : 8;
}

bool IsKnownKind(uint32_t kind) {
  return kind >= static_cast<uint32_t>(PlanSectionKind::kGraph) &&
         kind <= static_cast<uint32_t>(PlanSectionKind::kDispatch);
}
bool IsReservedKind(uint32_t kind) {
  return kind == static_cast<uint32_t>(PlanSectionKind::kMemoryPlan);
}

absl::Span<const uint8_t> AsBytes(const std::string& s) {
  return absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

std::string ErrnoText(int err) { return std::strerror(err); }

// Writes all of `data` to `fd`.
absl::Status WriteAll(int fd, const std::string& name, absl::Span<const uint8_t> data) {
  size_t done = 0;
  while (done < data.size()) {
    size_t chunk = std::min<size_t>(data.size() - done, size_t{1} << 30);
    ssize_t n = ::write(fd, data.data() + done, chunk);
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::InternalError(absl::StrCat(name, ": write failed: ", ErrnoText(errno)));
    }
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

std::string Hex64(uint64_t v) { return absl::StrFormat("0x%016x", v); }

}  // namespace

std::string PlanSectionName(uint32_t kind) {
  switch (static_cast<PlanSectionKind>(kind)) {
    case PlanSectionKind::kGraph: return "GRAPH";
    case PlanSectionKind::kModelRef: return "MODEL_REF";
    case PlanSectionKind::kEmbeddedGguf: return "EMBEDDED_GGUF";
    case PlanSectionKind::kOptions: return "OPTIONS";
    case PlanSectionKind::kMemoryPlan: return "MEMORY_PLAN";
    case PlanSectionKind::kKernels: return "KERNELS";
    case PlanSectionKind::kDispatch: return "DISPATCH";
  }
  return absl::StrCat("kind ", kind);
}

uint64_t Fnv1a64(absl::Span<const uint8_t> data, uint64_t h) {
  for (uint8_t b : data) {
    h ^= b;
    h *= kFnv1a64Prime;
  }
  return h;
}

uint64_t GgufFingerprint(const GgufFile& file) {
  absl::Span<const uint8_t> all = file.bytes();
  uint64_t head = std::min<uint64_t>(file.data_offset(), all.size());
  uint64_t h = Fnv1a64(all.subspan(0, head));
  std::string size_bytes;
  PutU64(size_bytes, all.size());
  return Fnv1a64(AsBytes(size_bytes), h);
}

absl::StatusOr<ModelRef> MakeModelRef(const GgufFile& file) {
  if (file.path().empty()) {
    return absl::InvalidArgumentError("a model parsed from memory has no path to reference");
  }
  char resolved[PATH_MAX];
  if (::realpath(file.path().c_str(), resolved) == nullptr) {
    return absl::NotFoundError(absl::StrCat(file.path(), ": cannot resolve the absolute path: ",
                                            ErrnoText(errno)));
  }
  ModelRef ref;
  ref.path = resolved;
  ref.size = file.file_size();
  ref.fingerprint = GgufFingerprint(file);
  return ref;
}

absl::Status WritePlan(const std::string& path, const PlanContents& contents) {
  if (contents.model_ref.has_value() == contents.embedded_gguf.has_value()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": a plan needs exactly one of a model reference and an embedded GGUF"));
  }
  for (const auto& [key, value] : contents.options) {
    if (key.empty() || key.find_first_of("=\n") != std::string::npos ||
        value.find('\n') != std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": option '", key, "' cannot be written as a key=value line"));
    }
  }

  struct Section {
    uint32_t kind;
    uint32_t flags;
    absl::Span<const uint8_t> data;
    uint64_t offset = 0;
  };
  std::string options_text;
  for (const auto& [key, value] : contents.options) {
    absl::StrAppend(&options_text, key, "=", value, "\n");
  }
  std::string model_ref_bytes;
  std::vector<Section> sections;
  sections.push_back({static_cast<uint32_t>(PlanSectionKind::kOptions), 0, AsBytes(options_text)});
  if (contents.model_ref.has_value()) {
    const ModelRef& ref = *contents.model_ref;
    PutU64(model_ref_bytes, ref.size);
    PutU64(model_ref_bytes, ref.fingerprint);
    PutU32(model_ref_bytes, static_cast<uint32_t>(ref.path.size()));
    model_ref_bytes += ref.path;
    sections.push_back(
        {static_cast<uint32_t>(PlanSectionKind::kModelRef), 0, AsBytes(model_ref_bytes)});
  }
  sections.push_back({static_cast<uint32_t>(PlanSectionKind::kGraph), 0, AsBytes(contents.graph)});
  if (contents.kernels.has_value()) {
    sections.push_back(
        {static_cast<uint32_t>(PlanSectionKind::kKernels), 0, AsBytes(*contents.kernels)});
  }
  if (contents.dispatch.has_value()) {
    sections.push_back(
        {static_cast<uint32_t>(PlanSectionKind::kDispatch), 0, AsBytes(*contents.dispatch)});
  }
  for (const auto& [kind, flags, bytes] : contents.extra_sections) {
    sections.push_back({kind, flags, AsBytes(bytes)});
  }
  if (contents.embedded_gguf.has_value()) {
    sections.push_back(
        {static_cast<uint32_t>(PlanSectionKind::kEmbeddedGguf), 0, *contents.embedded_gguf});
  }

  std::string head(kPlanMagic, sizeof(kPlanMagic));
  PutU32(head, kPlanFormatVersion);
  PutU32(head, static_cast<uint32_t>(sections.size()));
  uint64_t pos = kPlanHeaderBytes + kPlanSectionEntryBytes * sections.size();
  for (Section& s : sections) {
    s.offset = AlignUp(pos, SectionAlignment(s.kind));
    pos = s.offset + s.data.size();
    PutU32(head, s.kind);
    PutU32(head, s.flags);
    PutU64(head, s.offset);
    PutU64(head, s.data.size());
    PutU64(head, Fnv1a64(s.data));
  }

  // Write into a temporary file beside `path`, then rename it into place, so
  // that a reader never sees a half-written plan.
  std::string tmp = path + ".tmp.XXXXXX";
  int fd = ::mkstemp(tmp.data());
  if (fd < 0) {
    return absl::PermissionDeniedError(
        absl::StrCat(path, ": cannot create a temporary file beside it: ", ErrnoText(errno)));
  }
  auto fail = [&](absl::Status st) {
    ::close(fd);
    ::unlink(tmp.c_str());
    return st;
  };
  if (::fchmod(fd, 0644) != 0) {
    return fail(absl::InternalError(absl::StrCat(tmp, ": chmod failed: ", ErrnoText(errno))));
  }
  absl::Status st = WriteAll(fd, tmp, AsBytes(head));
  uint64_t written = head.size();
  static const uint8_t kZeros[64] = {};
  for (const Section& s : sections) {
    if (!st.ok()) break;
    st = WriteAll(fd, tmp, absl::Span<const uint8_t>(kZeros, s.offset - written));
    if (st.ok()) st = WriteAll(fd, tmp, s.data);
    written = s.offset + s.data.size();
  }
  if (!st.ok()) return fail(st);
  if (::fsync(fd) != 0) {
    return fail(absl::InternalError(absl::StrCat(tmp, ": fsync failed: ", ErrnoText(errno))));
  }
  if (::close(fd) != 0) {
    ::unlink(tmp.c_str());
    return absl::InternalError(absl::StrCat(tmp, ": close failed: ", ErrnoText(errno)));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    return absl::InternalError(
        absl::StrCat(path, ": cannot rename ", tmp, " into place: ", ErrnoText(err)));
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------
// Loading.

PlanFile::~PlanFile() = default;

absl::StatusOr<std::unique_ptr<PlanFile>> PlanFile::Open(const std::string& path) {
  // Regular files only, never blocking on a FIFO; mapped with the truncation
  // guard (frontends/io/file.h).
  absl::StatusOr<std::unique_ptr<io::MappedFile>> mapped = io::MappedFile::Open(path);
  if (!mapped.ok()) return mapped.status();
  std::unique_ptr<PlanFile> plan(new PlanFile());
  plan->name_ = path;
  plan->data_ = (*mapped)->bytes();
  plan->mapped_ = *std::move(mapped);
  absl::Status parsed = plan->Parse();
  if (!parsed.ok()) return parsed;
  return plan;
}

absl::StatusOr<std::unique_ptr<PlanFile>> PlanFile::FromBuffer(std::string name,
                                                               absl::Span<const uint8_t> data) {
  std::unique_ptr<PlanFile> plan(new PlanFile());
  plan->name_ = std::move(name);
  plan->data_ = data;
  absl::Status parsed = plan->Parse();
  if (!parsed.ok()) return parsed;
  return plan;
}

absl::Status PlanFile::Parse() {
  const uint64_t file_size = data_.size();
  auto truncated = [&](std::string_view what, uint64_t need, uint64_t at) {
    return absl::DataLossError(absl::StrCat(name_, ": truncated: ", AV(what), " needs ", need,
                                            " bytes at offset ", at, ", file has ", file_size));
  };
  if (file_size < kPlanHeaderBytes) return truncated("header", kPlanHeaderBytes, 0);
  if (std::memcmp(data_.data(), kPlanMagic, sizeof(kPlanMagic)) != 0) {
    std::string seen;
    for (int i = 0; i < 8; ++i) {
      uint8_t c = data_[i];
      if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
        seen.push_back(static_cast<char>(c));
      } else {
        absl::StrAppendFormat(&seen, "\\x%02x", c);
      }
    }
    return absl::InvalidArgumentError(absl::StrCat(
        name_, ": magic at offset 0 is \"", seen,
        "\", expected \"VBRNTPLN\" (not a Vibrant plan; compile one with `vibrantc compile`)"));
  }
  version_ = LoadU32(data_.data() + 8);
  if (version_ != kPlanFormatVersion) {
    return absl::InvalidArgumentError(absl::StrCat(
        name_, ": format version at offset 8 is ", version_, "; this build reads version ",
        kPlanFormatVersion, ": the plan was compiled by ", version_ < kPlanFormatVersion ? "an older" : "a newer",
        " Vibrant (recompile it with this vibrantc)"));
  }
  const uint32_t count = LoadU32(data_.data() + 12);
  if (count > kPlanMaxSections) {
    return absl::InvalidArgumentError(absl::StrCat(name_, ": section count at offset 12 is ",
                                                   count, ", more than the maximum of ",
                                                   kPlanMaxSections, " (file is corrupted)"));
  }
  const uint64_t table_bytes = kPlanSectionEntryBytes * count;
  if (file_size - kPlanHeaderBytes < table_bytes) {
    return truncated("section table", table_bytes, kPlanHeaderBytes);
  }
  const uint64_t table_end = kPlanHeaderBytes + table_bytes;

  struct Entry {
    uint32_t kind;
    uint32_t flags;
    uint64_t offset;
    uint64_t size;
    uint64_t checksum;
  };
  std::vector<Entry> known;
  std::vector<Entry> skipped;  // optional sections of kinds this reader ignores
  for (uint32_t i = 0; i < count; ++i) {
    const uint64_t at = kPlanHeaderBytes + kPlanSectionEntryBytes * i;
    const uint8_t* p = data_.data() + at;
    Entry e{LoadU32(p), LoadU32(p + 4), LoadU64(p + 8), LoadU64(p + 16), LoadU64(p + 24)};
    const std::string sname = PlanSectionName(e.kind);
    const std::string where = absl::StrCat(name_, ": section table entry ", i, " (", sname,
                                           ") at offset ", at, ": ");
    if ((e.flags & ~kPlanSectionOptional) != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, "unknown flags ", absl::StrFormat("0x%x", e.flags), " (file is corrupted)"));
    }
    if (!IsKnownKind(e.kind) || IsReservedKind(e.kind)) {
      if (e.flags & kPlanSectionOptional) {  // a later format's extra: skip it
        if (e.offset > file_size || e.size > file_size - e.offset) {
          return truncated(absl::StrCat("section ", sname), e.size, e.offset);
        }
        skipped.push_back(e);
        continue;
      }
      if (IsReservedKind(e.kind)) {
        return absl::UnimplementedError(
            absl::StrCat(where, "this section is not supported by this build of Vibrant"));
      }
      return absl::InvalidArgumentError(
          absl::StrCat(where, "unknown section kind ", e.kind,
                       " not marked optional (file is corrupted, or written by a newer Vibrant)"));
    }
    if (e.flags != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, "a required section is flagged optional (file is corrupted)"));
    }
    for (const Entry& other : known) {
      if (other.kind == e.kind) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, "second ", sname, " section (file is corrupted)"));
      }
    }
    const std::string swhere = absl::StrCat(name_, ": section ", sname, " at offset ", e.offset);
    if (e.offset < table_end) {
      return absl::InvalidArgumentError(absl::StrCat(
          swhere, ": overlaps the header and section table, which end at offset ", table_end,
          " (file is corrupted)"));
    }
    if (e.offset % SectionAlignment(e.kind) != 0) {
      return absl::InvalidArgumentError(absl::StrCat(swhere, ": not ", SectionAlignment(e.kind),
                                                     "-byte aligned (file is corrupted)"));
    }
    if (e.offset > file_size || e.size > file_size - e.offset) {
      return truncated(absl::StrCat("section ", sname), e.size, e.offset);
    }
    known.push_back(e);
  }

  // Sections must not overlap one another, and the bytes between them (the
  // alignment padding) are zeros, so that every byte outside EMBEDDED_GGUF is
  // covered by a check. Sections a reader skipped count as data.
  std::vector<Entry> by_offset = known;
  for (const Entry& e : skipped) by_offset.push_back(e);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const Entry& a, const Entry& b) { return a.offset < b.offset; });
  uint64_t covered = table_end;
  const Entry* prev = nullptr;
  for (const Entry& e : by_offset) {
    if (e.offset < covered) {
      return absl::InvalidArgumentError(absl::StrCat(
          name_, ": section ", PlanSectionName(e.kind), " at offset ", e.offset,
          ": overlaps ",
          prev == nullptr ? std::string("the section table")
                          : absl::StrCat("section ", PlanSectionName(prev->kind), " at offset ",
                                         prev->offset),
          " (file is corrupted)"));
    }
    for (uint64_t i = covered; i < e.offset; ++i) {
      if (data_[i] != 0) {
        return absl::DataLossError(absl::StrCat(name_, ": padding byte at offset ", i,
                                                " is not zero (file is corrupted)"));
      }
    }
    covered = e.offset + e.size;
    prev = &e;
  }
  if (covered != file_size) {
    return absl::DataLossError(absl::StrCat(name_, ": ", file_size - covered,
                                            " unexpected bytes after the last section, at offset ",
                                            covered, " (file is corrupted)"));
  }

  for (const Entry& e : known) {
    if (e.kind == static_cast<uint32_t>(PlanSectionKind::kEmbeddedGguf)) continue;
    if (Fnv1a64(data_.subspan(e.offset, e.size)) != e.checksum) {
      return absl::DataLossError(absl::StrCat(name_, ": section ", PlanSectionName(e.kind),
                                              " at offset ", e.offset,
                                              ": checksum mismatch (file is corrupted)"));
    }
  }

  const Entry* graph = nullptr;
  const Entry* options = nullptr;
  const Entry* model_ref = nullptr;
  const Entry* embedded = nullptr;
  const Entry* kernels = nullptr;
  const Entry* dispatch = nullptr;
  for (const Entry& e : known) {
    switch (static_cast<PlanSectionKind>(e.kind)) {
      case PlanSectionKind::kGraph: graph = &e; break;
      case PlanSectionKind::kOptions: options = &e; break;
      case PlanSectionKind::kModelRef: model_ref = &e; break;
      case PlanSectionKind::kEmbeddedGguf: embedded = &e; break;
      case PlanSectionKind::kKernels: kernels = &e; break;
      case PlanSectionKind::kDispatch: dispatch = &e; break;
      default: break;
    }
  }
  if (graph == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(name_, ": no GRAPH section"));
  }
  if (options == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(name_, ": no OPTIONS section"));
  }
  if ((model_ref == nullptr) == (embedded == nullptr)) {
    return absl::InvalidArgumentError(absl::StrCat(
        name_, ": needs exactly one of the MODEL_REF and EMBEDDED_GGUF sections, has ",
        model_ref == nullptr ? "neither" : "both"));
  }
  graph_ = data_.subspan(graph->offset, graph->size);
  if (kernels != nullptr) kernels_ = data_.subspan(kernels->offset, kernels->size);
  if (dispatch != nullptr) dispatch_ = data_.subspan(dispatch->offset, dispatch->size);

  // OPTIONS: "key=value\n" lines.
  {
    absl::Span<const uint8_t> text = data_.subspan(options->offset, options->size);
    std::string_view s(reinterpret_cast<const char*>(text.data()), text.size());
    uint64_t line_start = 0;
    int line_no = 0;
    while (line_start < s.size()) {
      ++line_no;
      size_t nl = s.find('\n', line_start);
      if (nl == std::string_view::npos) {
        return absl::InvalidArgumentError(
            absl::StrCat(name_, ": section OPTIONS at offset ", options->offset + line_start,
                         ": line ", line_no, " does not end with a newline"));
      }
      std::string_view line = s.substr(line_start, nl - line_start);
      size_t eq = line.find('=');
      if (eq == std::string_view::npos || eq == 0) {
        return absl::InvalidArgumentError(
            absl::StrCat(name_, ": section OPTIONS at offset ", options->offset + line_start,
                         ": line ", line_no, " is not key=value"));
      }
      options_.emplace_back(std::string(line.substr(0, eq)), std::string(line.substr(eq + 1)));
      line_start = nl + 1;
    }
  }

  if (model_ref != nullptr) {
    const uint64_t at = model_ref->offset;
    if (model_ref->size < 20) {
      return absl::InvalidArgumentError(
          absl::StrCat(name_, ": section MODEL_REF at offset ", at, ": ", model_ref->size,
                       " bytes, fewer than the 20 of its fixed fields"));
    }
    const uint8_t* p = data_.data() + at;
    ModelRef ref;
    ref.size = LoadU64(p);
    ref.fingerprint = LoadU64(p + 8);
    uint32_t path_len = LoadU32(p + 16);
    if (uint64_t{path_len} != model_ref->size - 20) {
      return absl::InvalidArgumentError(absl::StrCat(
          name_, ": section MODEL_REF at offset ", at, ": path length at offset ", at + 16,
          " is ", path_len, " but the section holds ", model_ref->size - 20, " bytes of path"));
    }
    ref.path.assign(reinterpret_cast<const char*>(p + 20), path_len);
    if (ref.path.empty() || ref.path[0] != '/') {
      return absl::InvalidArgumentError(
          absl::StrCat(name_, ": section MODEL_REF at offset ", at, ": model path '", ref.path,
                       "' is not absolute"));
    }
    model_ref_ = std::move(ref);
  }
  if (embedded != nullptr) {
    embedded_gguf_ = data_.subspan(embedded->offset, embedded->size);
  }
  return absl::OkStatus();
}

std::string PlanFile::Option(std::string_view key, std::string_view dflt) const {
  for (const auto& [k, v] : options_) {
    if (k == key) return v;
  }
  return std::string(dflt);
}

absl::StatusOr<ir::Graph> PlanFile::LoadGraph() const {
  absl::StatusOr<ir::Graph> graph = ir::DeserializeGraph(graph_);
  if (!graph.ok()) {
    return absl::Status(graph.status().code(),
                        absl::StrCat(name_, ": section GRAPH: ", graph.status().message()));
  }
  // The checksum says the bytes are the ones written, not that the writer
  // was honest: the memory plan and sizes are checked before any backend
  // sees the graph (runtime/plan_validate.h).
  if (absl::StatusOr<GraphMemoryNeeds> needs = ValidateExecutableGraph(*graph); !needs.ok()) {
    return absl::Status(needs.status().code(),
                        absl::StrCat(name_, ": section GRAPH: ", needs.status().message()));
  }
  return graph;
}

absl::StatusOr<std::unique_ptr<GgufFile>> PlanFile::OpenModel() const {
  if (embedded_gguf_.has_value()) {
    return GgufFile::FromBuffer(absl::StrCat(name_, " (embedded model)"), *embedded_gguf_);
  }
  const ModelRef& ref = *model_ref_;
  const std::string recompile =
      "; recompile the plan (or compile with --embed-weights for a self-contained plan)";
  struct stat st;
  if (::stat(ref.path.c_str(), &st) != 0) {
    int err = errno;
    return absl::NotFoundError(absl::StrCat(name_, ": the model it was compiled from, ", ref.path,
                                            ", cannot be found (", ErrnoText(err),
                                            "; moved or deleted?)", recompile));
  }
  if (static_cast<uint64_t>(st.st_size) != ref.size) {
    return absl::FailedPreconditionError(absl::StrCat(
        name_, ": the model ", ref.path, " changed since the plan was compiled: its size was ",
        ref.size, " bytes, now ", static_cast<uint64_t>(st.st_size), recompile));
  }
  absl::StatusOr<std::unique_ptr<GgufFile>> model = GgufFile::Open(ref.path);
  if (!model.ok()) {
    return absl::Status(model.status().code(),
                        absl::StrCat(name_, ": the model it was compiled from cannot be read: ",
                                     model.status().message()));
  }
  uint64_t now = GgufFingerprint(**model);
  if (now != ref.fingerprint) {
    return absl::FailedPreconditionError(absl::StrCat(
        name_, ": the model ", ref.path,
        " changed since the plan was compiled: its header, metadata or tensor table differ "
        "(fingerprint ",
        Hex64(ref.fingerprint), " at compile, ", Hex64(now), " now)", recompile));
  }
  return model;
}

}  // namespace vibrant
