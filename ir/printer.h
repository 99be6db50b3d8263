// The IR's text format: a readable, stable, diffable rendering of a graph,
// and its parser. The format is documented in docs/ir.md.
#ifndef VIBRANT_IR_PRINTER_H_
#define VIBRANT_IR_PRINTER_H_

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "ir/graph.h"

namespace vibrant::ir {

// Renders `g`. Deterministic: equal graphs print equal text. Declarations
// (inputs, weights, KV caches) print first in value-id order, then ops in
// execution order, then outputs. Works on unverified graphs too (a value id
// out of range prints as %<bad:ID>, an undefined activation as a comment), so
// it can show what the verifier rejected.
std::string PrintGraph(const Graph& g);

// Parses the text PrintGraph writes (whitespace and `//` comments are free)
// and verifies the result. PrintGraph(*ParseGraph(PrintGraph(g))) ==
// PrintGraph(g) for any verified g; value ids may be renumbered (declarations
// come first). Errors give the line and column: "line 7, column 12: unknown
// value %x".
absl::StatusOr<Graph> ParseGraph(std::string_view text);

// Shortest text that reads back to the same double, always with a '.', an
// exponent, "inf" or "nan" so it is not mistaken for an integer: 1e-05,
// 10000.0, -0.0, inf.
std::string FormatDouble(double d);

}  // namespace vibrant::ir

#endif  // VIBRANT_IR_PRINTER_H_
