// libFuzzer target: vibrant-server's request parsing (openai.h) on arbitrary
// bytes, for both endpoints. Checks, beyond "no crash, no leak, no UB": a
// parse either succeeds or yields a 400 error with a message; every string of
// an accepted request and every error message dumps as JSON (valid UTF-8
// after SanitizeUtf8); Utf8Complete cuts within bounds.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "tools/vibrant-server/openai.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace vibrant::server;
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  ParseLimits limits;
  limits.n_vocab = 32000;
  for (bool chat : {true, false}) {
    auto r = ParseRequest(body, chat, limits);
    if (auto* e = std::get_if<ApiError>(&r)) {
      if (e->http != 400 || e->message.empty()) std::abort();
      (void)Dump(ErrorJson(*e));
    } else {
      const ApiRequest& a = std::get<ApiRequest>(r);
      if (a.chat != chat) std::abort();
      if (chat && a.messages.empty()) std::abort();
      for (const auto& m : a.messages) (void)Dump(nlohmann::json(m.content));
      for (int32_t t : a.prompt_tokens) {
        if (t < 0 || t >= limits.n_vocab) std::abort();
      }
      if (a.top_logprobs > 20 || a.stop.size() > limits.max_stop) std::abort();
    }
  }
  const size_t cut = Utf8Complete(body);
  if (cut > body.size()) std::abort();
  (void)SanitizeUtf8(body);
  return 0;
}
