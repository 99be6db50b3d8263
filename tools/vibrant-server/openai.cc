#include "tools/vibrant-server/openai.h"

#include <cmath>
#include <limits>
#include <set>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace vibrant::server {
namespace {

using json = nlohmann::json;

const char* TypeName(const json& j) {
  switch (j.type()) {
    case json::value_t::null: return "null";
    case json::value_t::object: return "an object";
    case json::value_t::array: return "an array";
    case json::value_t::string: return "a string";
    case json::value_t::boolean: return "a boolean";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned: return "an integer";
    case json::value_t::number_float: return "a number";
    default: return "a value";
  }
}

ApiError Bad(std::string param, std::string message) {
  ApiError e;
  e.param = std::move(param);
  e.message = std::move(message);
  return e;
}

ApiError WrongType(const std::string& param, const json& v, const char* want) {
  return Bad(param, absl::StrCat("'", param, "' must be ", want, ", not ", TypeName(v)));
}

// Readers: nullopt on success (value stored), else the error.
std::optional<ApiError> ReadNumber(const json& v, const std::string& param, double lo, double hi,
                                   float* out) {
  if (!v.is_number()) return WrongType(param, v, "a number");
  const double d = v.get<double>();
  if (!std::isfinite(d) || d < lo || d > hi) {
    return Bad(param, absl::StrCat("'", param, "' is ", d, "; it must be in [", lo, ", ", hi, "]"));
  }
  *out = static_cast<float>(d);
  return std::nullopt;
}

std::optional<ApiError> ReadInt(const json& v, const std::string& param, int64_t lo, int64_t hi,
                                int64_t* out) {
  int64_t x = 0;
  if (v.is_number_integer()) {
    if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) {
      return Bad(param, absl::StrCat("'", param, "' is too large"));
    }
    x = v.get<int64_t>();
  } else if (v.is_number_float() && std::isfinite(v.get<double>()) &&
             std::floor(v.get<double>()) == v.get<double>() && std::fabs(v.get<double>()) < 9e15) {
    x = static_cast<int64_t>(v.get<double>());  // 5.0 is an integer in JSON's eyes
  } else {
    return WrongType(param, v, "an integer");
  }
  if (x < lo || x > hi) {
    return Bad(param, absl::StrCat("'", param, "' is ", x, "; it must be in [", lo, ", ", hi, "]"));
  }
  *out = x;
  return std::nullopt;
}

std::optional<ApiError> ReadBool(const json& v, const std::string& param, bool* out) {
  if (!v.is_boolean()) return WrongType(param, v, "a boolean");
  *out = v.get<bool>();
  return std::nullopt;
}

// A message's content: a string, or an array of {"type": "text", "text": ...}
// parts (OpenAI's content parts; other part types are refused).
std::optional<ApiError> ReadContent(const json& v, const std::string& param, std::string* out) {
  if (v.is_string()) {
    *out = v.get<std::string>();
    return std::nullopt;
  }
  if (v.is_null()) {
    out->clear();
    return std::nullopt;
  }
  if (!v.is_array()) return WrongType(param, v, "a string or an array of content parts");
  out->clear();
  for (size_t i = 0; i < v.size(); ++i) {
    const std::string p = absl::StrCat(param, "[", i, "]");
    const json& part = v[i];
    if (!part.is_object()) return WrongType(p, part, "an object");
    auto type = part.find("type");
    if (type == part.end() || !type->is_string()) {
      return Bad(p + ".type", absl::StrCat("'", p, ".type' must be a string"));
    }
    if (type->get<std::string>() != "text") {
      return Bad(p + ".type", absl::StrCat("content parts of type '", type->get<std::string>(),
                                           "' are not supported (only 'text')"));
    }
    for (auto it = part.begin(); it != part.end(); ++it) {
      if (it.key() != "type" && it.key() != "text") {
        return Bad(p + "." + it.key(), absl::StrCat("unknown field '", p, ".", it.key(), "'"));
      }
    }
    auto text = part.find("text");
    if (text == part.end() || !text->is_string()) {
      return Bad(p + ".text", absl::StrCat("'", p, ".text' must be a string"));
    }
    *out += text->get<std::string>();
  }
  return std::nullopt;
}

}  // namespace

json ErrorJson(const ApiError& e) {
  json err = {{"message", e.message},
              {"type", e.type},
              {"param", e.param.empty() ? json(nullptr) : json(e.param)},
              {"code", e.code.empty() ? json(nullptr) : json(e.code)}};
  return json{{"error", err}};
}

std::variant<ApiRequest, ApiError> ParseRequest(std::string_view body, bool chat,
                                                const ParseLimits& limits) {
  json j;
  try {
    j = json::parse(body.begin(), body.end());
  } catch (const json::exception& e) {
    // "[json.exception.parse_error.101] parse error at line 1, column 5: ..."
    std::string what = e.what();
    const size_t at = what.find("] ");
    if (at != std::string::npos) what = what.substr(at + 2);
    return Bad("", absl::StrCat("the request body is not valid JSON: ", SanitizeUtf8(what)));
  }
  if (!j.is_object()) return Bad("", absl::StrCat("the request body must be a JSON object, not ", TypeName(j)));

  ApiRequest r;
  r.chat = chat;
  // OpenAI's defaults: the whole distribution at temperature 1.
  r.sampling.temp = 1.0f;
  r.sampling.top_k = 0;
  r.sampling.top_p = 1.0f;
  r.sampling.min_p = 0.0f;
  r.sampling.repeat_last_n = 64;
  bool logprobs_on = false;
  int64_t top_logprobs = -1;
  bool have_messages = false, have_prompt = false;

  static const std::set<std::string> kChatOnly = {"messages", "logprobs", "top_logprobs",
                                                  "max_completion_tokens", "response_format",
                                                  "tools", "tool_choice", "parallel_tool_calls",
                                                  "functions", "function_call", "modalities",
                                                  "reasoning_effort", "store", "metadata",
                                                  "service_tier", "prediction", "audio",
                                                  "web_search_options"};
  static const std::set<std::string> kCompletionOnly = {"prompt", "echo", "best_of", "suffix",
                                                        "logprobs"};
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& key = it.key();
    const json& v = it.value();
    std::optional<ApiError> e;
    const bool known_elsewhere = chat ? (kCompletionOnly.count(key) != 0 && kChatOnly.count(key) == 0)
                                      : (kChatOnly.count(key) != 0 && kCompletionOnly.count(key) == 0);
    if (known_elsewhere) {
      return Bad(key, absl::StrCat("'", key, "' is a field of ",
                                   chat ? "/v1/completions" : "/v1/chat/completions",
                                   ", not of this endpoint"));
    }
    if (key == "model") {
      if (!v.is_string()) return WrongType(key, v, "a string");
      r.model = v.get<std::string>();
    } else if (key == "messages" && chat) {
      if (!v.is_array()) return WrongType(key, v, "an array of messages");
      if (v.empty()) return Bad(key, "'messages' must hold at least one message");
      if (v.size() > limits.max_messages) {
        return Bad(key, absl::StrCat("too many messages (", v.size(), "; at most ", limits.max_messages, ")"));
      }
      for (size_t i = 0; i < v.size(); ++i) {
        const std::string p = absl::StrCat("messages[", i, "]");
        const json& m = v[i];
        if (!m.is_object()) return WrongType(p, m, "an object");
        chat::Message msg;
        bool have_role = false, have_content = false;
        for (auto f = m.begin(); f != m.end(); ++f) {
          const std::string fp = p + "." + f.key();
          if (f.key() == "role") {
            if (!f->is_string()) return WrongType(fp, *f, "a string");
            msg.role = f->get<std::string>();
            if (msg.role == "developer") msg.role = "system";  // OpenAI's newer name
            if (msg.role != "system" && msg.role != "user" && msg.role != "assistant") {
              return Bad(fp, absl::StrCat("'", fp, "' is '", SanitizeUtf8(msg.role),
                                          "'; it must be system, developer, user or assistant"));
            }
            have_role = true;
          } else if (f.key() == "content") {
            if (auto ce = ReadContent(*f, fp, &msg.content)) return *ce;
            have_content = true;
          } else if (f.key() == "name") {
            if (!f->is_string()) return WrongType(fp, *f, "a string");
          } else if (f.key() == "tool_calls" || f.key() == "function_call" || f.key() == "tool_call_id") {
            return Bad(fp, "tool calls are not supported");
          } else if (f.key() == "refusal") {
            if (!f->is_null() && !f->is_string()) return WrongType(fp, *f, "a string or null");
          } else {
            return Bad(fp, absl::StrCat("unknown field '", fp, "'"));
          }
        }
        if (!have_role) return Bad(p + ".role", absl::StrCat("'", p, ".role' is required"));
        if (!have_content) return Bad(p + ".content", absl::StrCat("'", p, ".content' is required"));
        r.messages.push_back(std::move(msg));
      }
      have_messages = true;
    } else if (key == "prompt" && !chat) {
      if (v.is_string()) {
        r.prompt = v.get<std::string>();
      } else if (v.is_array() && v.size() == 1 && v[0].is_string()) {
        r.prompt = v[0].get<std::string>();
      } else if (v.is_array() && !v.empty() && v[0].is_number()) {
        r.prompt_is_tokens = true;
        for (size_t i = 0; i < v.size(); ++i) {
          int64_t id = 0;
          if (auto ie = ReadInt(v[i], absl::StrCat("prompt[", i, "]"), 0, limits.n_vocab - 1, &id)) {
            return *ie;
          }
          r.prompt_tokens.push_back(static_cast<int32_t>(id));
        }
      } else if (v.is_array() && v.size() > 1) {
        return Bad(key, "a batch of several prompts is not supported: send one request per prompt");
      } else {
        return WrongType(key, v, "a string or an array of token ids");
      }
      have_prompt = true;
    } else if (key == "stream") {
      if (!v.is_null()) e = ReadBool(v, key, &r.stream);
    } else if (key == "stream_options") {
      if (v.is_null()) continue;
      if (!v.is_object()) return WrongType(key, v, "an object");
      for (auto f = v.begin(); f != v.end(); ++f) {
        if (f.key() == "include_usage") {
          if (auto be = ReadBool(*f, "stream_options.include_usage", &r.include_usage)) return *be;
        } else if (f.key() == "continuous_usage_stats") {
          bool ignored = false;
          if (auto be = ReadBool(*f, "stream_options.continuous_usage_stats", &ignored)) return *be;
        } else {
          return Bad("stream_options." + f.key(),
                     absl::StrCat("unknown field 'stream_options.", f.key(), "'"));
        }
      }
    } else if (key == "max_tokens" || key == "max_completion_tokens" || key == "n_predict") {
      if (!v.is_null()) e = ReadInt(v, key, 0, INT32_MAX, &r.max_tokens);
    } else if (key == "temperature") {
      if (!v.is_null()) e = ReadNumber(v, key, 0, 2, &r.sampling.temp);
    } else if (key == "top_p") {
      if (!v.is_null()) e = ReadNumber(v, key, 0, 1, &r.sampling.top_p);
      if (!e && r.sampling.top_p <= 0) r.sampling.top_p = std::numeric_limits<float>::min();
    } else if (key == "top_k") {
      int64_t k = 0;
      if (!v.is_null()) e = ReadInt(v, key, -1, INT32_MAX, &k);
      r.sampling.top_k = static_cast<int32_t>(k < 0 ? 0 : k);  // -1: off (vLLM)
    } else if (key == "min_p") {
      if (!v.is_null()) e = ReadNumber(v, key, 0, 1, &r.sampling.min_p);
    } else if (key == "presence_penalty") {
      if (!v.is_null()) e = ReadNumber(v, key, -2, 2, &r.sampling.presence_penalty);
    } else if (key == "frequency_penalty") {
      if (!v.is_null()) e = ReadNumber(v, key, -2, 2, &r.sampling.frequency_penalty);
    } else if (key == "repeat_penalty" || key == "repetition_penalty") {
      if (!v.is_null()) e = ReadNumber(v, key, 0.01, 10, &r.sampling.repeat_penalty);
    } else if (key == "repeat_last_n") {
      int64_t n = 0;
      if (!v.is_null()) e = ReadInt(v, key, -1, INT32_MAX, &n);
      if (!v.is_null() && !e) r.sampling.repeat_last_n = static_cast<int32_t>(n);
    } else if (key == "seed") {
      int64_t seed = 0;
      if (!v.is_null()) {
        e = ReadInt(v, key, INT64_MIN, INT64_MAX, &seed);
        // Any integer: its low 32 bits (0xFFFFFFFF, the "random" value, is avoided).
        if (!e) {
          r.sampling.seed = static_cast<uint32_t>(static_cast<uint64_t>(seed));
          if (r.sampling.seed == kRandomSeed) r.sampling.seed = 0x7FFFFFFFu;
        }
      }
    } else if (key == "stop") {
      if (v.is_null()) continue;
      std::vector<std::string> stops;
      if (v.is_string()) {
        stops.push_back(v.get<std::string>());
      } else if (v.is_array()) {
        for (size_t i = 0; i < v.size(); ++i) {
          if (!v[i].is_string()) return WrongType(absl::StrCat("stop[", i, "]"), v[i], "a string");
          stops.push_back(v[i].get<std::string>());
        }
      } else {
        return WrongType(key, v, "a string or an array of strings");
      }
      if (stops.size() > limits.max_stop) {
        return Bad(key, absl::StrCat("at most ", limits.max_stop, " stop sequences"));
      }
      for (const std::string& s : stops) {
        if (s.empty()) return Bad(key, "stop sequences must not be empty");
        if (s.size() > limits.max_stop_bytes) {
          return Bad(key, absl::StrCat("a stop sequence is at most ", limits.max_stop_bytes, " bytes"));
        }
      }
      r.stop = std::move(stops);
    } else if (key == "logit_bias") {
      if (v.is_null()) continue;
      if (!v.is_object()) return WrongType(key, v, "an object of token id -> bias");
      if (v.size() > limits.max_logit_bias) {
        return Bad(key, absl::StrCat("at most ", limits.max_logit_bias, " logit_bias entries"));
      }
      for (auto f = v.begin(); f != v.end(); ++f) {
        int64_t id = 0;
        if (!absl::SimpleAtoi(f.key(), &id) || id < 0 || id >= limits.n_vocab) {
          return Bad(key, absl::StrCat("logit_bias key '", SanitizeUtf8(f.key()),
                                       "' is not a token id in [0, ", limits.n_vocab, ")"));
        }
        float bias = 0;
        if (auto be = ReadNumber(*f, "logit_bias[" + f.key() + "]", -100, 100, &bias)) return *be;
        // -100 bans a token, as OpenAI describes it.
        r.sampling.logit_bias.push_back(
            {static_cast<int32_t>(id), bias <= -100 ? -std::numeric_limits<float>::infinity() : bias});
      }
    } else if (key == "logprobs") {
      if (v.is_null()) continue;
      if (chat) {
        e = ReadBool(v, key, &logprobs_on);
      } else {
        int64_t n = 0;
        e = ReadInt(v, key, 0, 5, &n);
        if (!e) {
          logprobs_on = true;
          top_logprobs = n;
        }
      }
    } else if (key == "top_logprobs") {
      if (!v.is_null()) e = ReadInt(v, key, 0, 20, &top_logprobs);
    } else if (key == "n" || key == "best_of") {
      int64_t n = 1;
      if (!v.is_null()) e = ReadInt(v, key, 1, 1, &n);
      if (e) e->message = absl::StrCat("'", key, "' must be 1: one choice per request is supported");
    } else if (key == "echo") {
      bool echo = false;
      if (!v.is_null()) e = ReadBool(v, key, &echo);
      if (!e && echo) return Bad(key, "'echo' is not supported");
    } else if (key == "suffix") {
      if (!v.is_null()) return Bad(key, "'suffix' is not supported");
    } else if (key == "response_format") {
      if (v.is_null()) continue;
      if (!v.is_object() || !v.contains("type") || !v["type"].is_string()) {
        return WrongType(key, v, "an object with a 'type'");
      }
      if (v["type"].get<std::string>() != "text") {
        return Bad(key, "only response_format {\"type\": \"text\"} is supported");
      }
    } else if (key == "tools" || key == "functions") {
      if (!v.is_null() && !(v.is_array() && v.empty())) return Bad(key, "tools are not supported");
    } else if (key == "tool_choice" || key == "function_call") {
      if (!v.is_null() && !(v.is_string() && v.get<std::string>() == "none")) {
        return Bad(key, "tools are not supported");
      }
    } else if (key == "parallel_tool_calls" || key == "store") {
      if (!v.is_null() && !v.is_boolean()) return WrongType(key, v, "a boolean");
    } else if (key == "user" || key == "service_tier" || key == "reasoning_effort") {
      if (!v.is_null() && !v.is_string()) return WrongType(key, v, "a string");
    } else if (key == "metadata") {
      if (!v.is_null() && !v.is_object()) return WrongType(key, v, "an object");
    } else if (key == "ignore_eos") {
      if (!v.is_null()) e = ReadBool(v, key, &r.ignore_eos);
    } else {
      return Bad(key, absl::StrCat("unknown field '", SanitizeUtf8(key), "'"));
    }
    if (e) return *e;
  }
  if (chat && !have_messages) return Bad("messages", "'messages' is required");
  if (!chat && !have_prompt) return Bad("prompt", "'prompt' is required");
  if (logprobs_on) r.top_logprobs = top_logprobs < 0 ? 0 : static_cast<int>(top_logprobs);
  else if (top_logprobs >= 0 && chat) {
    return Bad("top_logprobs", "'top_logprobs' needs 'logprobs': true");
  }
  if (r.sampling.temp <= 0.0f) r.sampling.temp = 0.0f;  // greedy
  return r;
}

size_t Utf8Complete(std::string_view s) {
  // Look back at most 3 bytes for the start of a sequence that is cut off.
  const size_t n = s.size();
  for (size_t back = 1; back <= 4 && back <= n; ++back) {
    const unsigned char c = static_cast<unsigned char>(s[n - back]);
    if ((c & 0xC0) == 0x80) continue;  // a continuation byte: keep looking
    size_t len = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 1;
    return len > back ? n - back : n;
  }
  return n;
}

std::string SanitizeUtf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    size_t len = 0;
    uint32_t cp = 0;
    if (c < 0x80) { len = 1; cp = c; }
    else if ((c & 0xE0) == 0xC0) { len = 2; cp = c & 0x1F; }
    else if ((c & 0xF0) == 0xE0) { len = 3; cp = c & 0x0F; }
    else if ((c & 0xF8) == 0xF0) { len = 4; cp = c & 0x07; }
    bool ok = len > 0 && i + len <= s.size();
    for (size_t k = 1; ok && k < len; ++k) {
      const unsigned char d = static_cast<unsigned char>(s[i + k]);
      if ((d & 0xC0) != 0x80) ok = false;
      cp = (cp << 6) | (d & 0x3F);
    }
    if (ok) {
      static constexpr uint32_t kMin[5] = {0, 0, 0x80, 0x800, 0x10000};
      if (cp < kMin[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) ok = false;
    }
    if (ok) {
      out.append(s.substr(i, len));
      i += len;
    } else {
      out += "\xEF\xBF\xBD";
      ++i;
    }
  }
  return out;
}

std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

}  // namespace vibrant::server
