// Compact binary encoding of an IR graph: the graph section of plan.bin.
//
// Little-endian, versioned; layout in docs/ir.md. The decoder treats its input
// as untrusted: every count, length, id and enum is checked against the buffer
// before use, so truncated or corrupted bytes give a named error
// ("graph section: op 12 input 3 at offset 480: value id 9999 out of range
// (412 values)"), never a crash. No checksum here: the container (plan.bin)
// owns integrity checking; this decoder owns memory safety.
#ifndef VIBRANT_IR_SERIALIZE_H_
#define VIBRANT_IR_SERIALIZE_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "ir/graph.h"

namespace vibrant::ir {

inline constexpr char kGraphMagic[4] = {'V', 'I', 'R', 'G'};
// Version 2 added memory plans (Value::arena_offset, Graph::memory); version 4
// weight views (Value::source_offset); version 5 tensor-parallel shards
// (Value::rank_offsets, source_row_stride); version 4 is still read (it is
// version 5 without those fields); older graphs are rejected ("unsupported
// version 3"): recompile the plan.
inline constexpr uint32_t kGraphFormatVersion = 5;

// Encodes `g` (including fused bodies, meta, devices, aliasing). Value and op
// ids are preserved exactly; producers are rebuilt on decoding.
std::string SerializeGraph(const Graph& g);

// Decodes bytes written by SerializeGraph, then runs Verify; the whole buffer
// must be consumed.
absl::StatusOr<Graph> DeserializeGraph(absl::Span<const uint8_t> bytes);

}  // namespace vibrant::ir

#endif  // VIBRANT_IR_SERIALIZE_H_
