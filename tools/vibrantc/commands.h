// Subcommands of vibrantc. Each takes the arguments after its name and
// returns the process exit code; errors go to stderr.
#ifndef VIBRANT_TOOLS_VIBRANTC_COMMANDS_H_
#define VIBRANT_TOOLS_VIBRANTC_COMMANDS_H_

#include <string>
#include <vector>

namespace vibrant::cli {

int RunInspect(const std::vector<std::string>& args);
int RunTokenize(const std::vector<std::string>& args);
int RunCompile(const std::vector<std::string>& args);
int RunDumpIr(const std::vector<std::string>& args);
int RunSynth(const std::vector<std::string>& args);

}  // namespace vibrant::cli

#endif  // VIBRANT_TOOLS_VIBRANTC_COMMANDS_H_
