// vibrantc: GGUF -> static tensor IR -> passes -> kernels -> plan.
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "api/version.h"
#include "tools/vibrantc/commands.h"

namespace {

struct Command {
  const char* name;
  int (*run)(const std::vector<std::string>&);
  const char* help;
};

constexpr Command kCommands[] = {
    {"inspect", vibrant::cli::RunInspect,
     "inspect MODEL.gguf [--json]          metadata and tensor table"},
    {"tokenize", vibrant::cli::RunTokenize,
     "tokenize MODEL.gguf TEXT|--file F [--no-bos] [--json]   token ids"},
    {"compile", vibrant::cli::RunCompile,
     "compile MODEL.gguf -o PLAN [--device cpu|cuda|auto] [--ctx-size N] [--max-tokens N]\n"
     "          [--kv-type f16|f32|q8_0] [--cache-type-k T] [--cache-type-v T] [--all-logits]\n"
     "          [--embed-weights]   compile a plan"},
    {"dump-ir", vibrant::cli::RunDumpIr,
     "dump-ir MODEL.gguf|PLAN              the IR graph, as text"},
    {"synth", vibrant::cli::RunSynth,
     "synth --preset NAME --type TYPE -o MODEL.gguf [--seed N] [--layers N]\n"
     "          a random-weight GGUF with a real model's shapes and quantization mix"},
};

void Usage(FILE* out) {
  std::fprintf(out, "usage: vibrantc COMMAND [ARGS] | --version\n\ncommands:\n");
  for (const Command& c : kCommands) std::fprintf(out, "  %s\n", c.help);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    Usage(stderr);
    return 2;
  }
  std::string name = argv[1];
  if (name == "--version" || name == "version") {
    std::printf("%s\n", vibrant::VersionLine("vibrantc").c_str());
    return 0;
  }
  if (name == "-h" || name == "--help" || name == "help") {
    Usage(stdout);
    return 0;
  }
  std::vector<std::string> args(argv + 2, argv + argc);
  for (const Command& c : kCommands) {
    if (name == c.name) return c.run(args);
  }
  std::fprintf(stderr, "vibrantc: unknown command '%s'\n", name.c_str());
  Usage(stderr);
  return 2;
}
