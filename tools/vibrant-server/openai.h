// The OpenAI API as vibrant-server speaks it: request bodies of
// POST /v1/chat/completions and /v1/completions parsed and checked into
// ApiRequest, and the JSON of replies, stream chunks and errors.
//
// Parsing is strict, as OpenAI's API is: malformed JSON, a field of the wrong
// type or out of its range, and an unknown field are errors that name the
// field (ApiError::param) and become HTTP 400 with an OpenAI error object
// ({"error": {"message", "type", "param", "code"}}). Fields OpenAI defines that
// the server does not implement are accepted at their neutral value (n = 1,
// echo = false, response_format text, no tools) and refused otherwise, with
// a message saying so. Extensions accepted as llama-server/vLLM name them:
// top_k, min_p, repeat_penalty, repeat_last_n, ignore_eos.
//
// Sampling defaults are OpenAI's (temperature 1, top_p 1, no top-k/min-p);
// temperature 0 is greedy. seed, stop (a string or up to 4 strings),
// max_tokens / max_completion_tokens, presence/frequency_penalty,
// logit_bias, logprobs (chat: logprobs + top_logprobs 0..20; completions:
// logprobs 0..5), stream and stream_options.include_usage.
#ifndef VIBRANT_TOOLS_VIBRANT_SERVER_OPENAI_H_
#define VIBRANT_TOOLS_VIBRANT_SERVER_OPENAI_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "frontends/chat/chat_template.h"
#include "nlohmann/json.hpp"
#include "runtime/sampler.h"

namespace vibrant::server {

struct ApiError {
  int http = 400;
  std::string message;
  std::string type = "invalid_request_error";
  std::string param;  // the offending field ("" when none)
  std::string code;   // e.g. "context_length_exceeded" ("" -> null)
};

// The error object OpenAI returns: {"error": {...}}.
nlohmann::json ErrorJson(const ApiError& e);

struct ApiRequest {
  bool chat = true;
  std::string model;
  std::vector<chat::Message> messages;  // chat
  // completions: the prompt as text, or as token ids.
  std::string prompt;
  std::vector<int32_t> prompt_tokens;
  bool prompt_is_tokens = false;
  bool stream = false;
  bool include_usage = false;        // stream_options.include_usage
  int64_t max_tokens = -1;           // -1: until the end of generation or the context
  SamplerParams sampling;
  std::vector<std::string> stop;
  int top_logprobs = -1;             // -1: no logprobs
  bool ignore_eos = false;
};

struct ParseLimits {
  size_t max_messages = 4096;
  size_t max_stop = 4;
  size_t max_stop_bytes = 256;
  size_t max_logit_bias = 1024;
  int64_t n_vocab = 1 << 30;  // token ids (prompt tokens, logit_bias keys) must be below
};

// Parses a request body. chat: /v1/chat/completions, else /v1/completions.
std::variant<ApiRequest, ApiError> ParseRequest(std::string_view body, bool chat,
                                                const ParseLimits& limits = {});

// Valid UTF-8 for JSON: text with incomplete or invalid sequences replaced
// by U+FFFD. Utf8Complete is the length of the longest prefix of `s` that
// does not end inside a (possibly valid) multi-byte sequence, so that
// streamed text is cut only between characters.
std::string SanitizeUtf8(std::string_view s);
size_t Utf8Complete(std::string_view s);

// json::dump that never throws on bad UTF-8 (replaces it).
std::string Dump(const nlohmann::json& j);

}  // namespace vibrant::server

#endif  // VIBRANT_TOOLS_VIBRANT_SERVER_OPENAI_H_
