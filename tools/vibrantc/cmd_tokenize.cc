#include "tools/vibrantc/commands.h"
namespace vibrant::cli {
int RunTokenize(const std::vector<std::string>& args) { return 1; }
}  // namespace vibrant::cli
