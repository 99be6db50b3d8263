#include "tools/vibrant-server/openai.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vibrant::server {
namespace {

using ::testing::HasSubstr;

ApiRequest Ok(const std::string& body, bool chat = true) {
  auto r = ParseRequest(body, chat);
  if (auto* e = std::get_if<ApiError>(&r)) {
    ADD_FAILURE() << body << " -> " << e->message;
    return {};
  }
  return std::get<ApiRequest>(r);
}

ApiError Err(const std::string& body, bool chat = true) {
  ParseLimits l;
  l.n_vocab = 512;
  auto r = ParseRequest(body, chat, l);
  if (auto* e = std::get_if<ApiError>(&r)) return *e;
  ADD_FAILURE() << body << " was accepted";
  return {};
}

TEST(ParseRequestTest, ChatWithEveryCommonField) {
  ApiRequest r = Ok(R"({"model": "m", "messages": [
      {"role": "system", "content": "be brief"},
      {"role": "user", "content": [{"type": "text", "text": "hi "}, {"type": "text", "text": "there"}]},
      {"role": "assistant", "content": "hello", "name": "bot"},
      {"role": "developer", "content": "x"}],
    "temperature": 0, "top_p": 0.5, "max_tokens": 7, "seed": 42, "stop": ["\n", "END"],
    "stream": true, "stream_options": {"include_usage": true}, "logprobs": true, "top_logprobs": 3,
    "presence_penalty": 0.5, "frequency_penalty": -0.5, "logit_bias": {"5": -100, "7": 2.5},
    "n": 1, "user": "u", "top_k": 10, "min_p": 0.1, "ignore_eos": true})");
  ASSERT_EQ(r.messages.size(), 4u);
  EXPECT_EQ(r.messages[1].content, "hi there");
  EXPECT_EQ(r.messages[3].role, "system");
  EXPECT_EQ(r.sampling.temp, 0.0f);
  EXPECT_EQ(r.sampling.top_p, 0.5f);
  EXPECT_EQ(r.max_tokens, 7);
  EXPECT_EQ(r.sampling.seed, 42u);
  EXPECT_EQ(r.stop, (std::vector<std::string>{"\n", "END"}));
  EXPECT_TRUE(r.stream);
  EXPECT_TRUE(r.include_usage);
  EXPECT_EQ(r.top_logprobs, 3);
  EXPECT_EQ(r.sampling.presence_penalty, 0.5f);
  EXPECT_EQ(r.sampling.frequency_penalty, -0.5f);
  ASSERT_EQ(r.sampling.logit_bias.size(), 2u);
  EXPECT_TRUE(std::isinf(r.sampling.logit_bias[0].second));
  EXPECT_EQ(r.sampling.top_k, 10);
  EXPECT_TRUE(r.ignore_eos);
}

TEST(ParseRequestTest, OpenAiDefaults) {
  ApiRequest r = Ok(R"({"messages": [{"role": "user", "content": "x"}]})");
  EXPECT_EQ(r.sampling.temp, 1.0f);
  EXPECT_EQ(r.sampling.top_p, 1.0f);
  EXPECT_EQ(r.sampling.top_k, 0);
  EXPECT_EQ(r.sampling.min_p, 0.0f);
  EXPECT_EQ(r.max_tokens, -1);
  EXPECT_EQ(r.top_logprobs, -1);
  EXPECT_FALSE(r.stream);
}

TEST(ParseRequestTest, CompletionPrompts) {
  EXPECT_EQ(Ok(R"({"prompt": "Once"})", false).prompt, "Once");
  EXPECT_EQ(Ok(R"({"prompt": ["Once"]})", false).prompt, "Once");
  ApiRequest t = Ok(R"({"prompt": [1, 403, 407], "logprobs": 2, "echo": false})", false);
  EXPECT_TRUE(t.prompt_is_tokens);
  EXPECT_EQ(t.prompt_tokens, (std::vector<int32_t>{1, 403, 407}));
  EXPECT_EQ(t.top_logprobs, 2);
}

TEST(ParseRequestTest, ErrorsNameTheField) {
  struct Case {
    const char* body;
    bool chat;
    const char* param;
    const char* message;
  };
  const Case cases[] = {
      {"{", true, "", "not valid JSON"},
      {"[1]", true, "", "must be a JSON object"},
      {R"({"messages": "hi"})", true, "messages", "must be an array"},
      {R"({"messages": []})", true, "messages", "at least one"},
      {R"({})", true, "messages", "required"},
      {R"({"messages": [{"content": "x"}]})", true, "messages[0].role", "required"},
      {R"({"messages": [{"role": "robot", "content": "x"}]})", true, "messages[0].role", "robot"},
      {R"({"messages": [{"role": "user", "content": 5}]})", true, "messages[0].content", "not an integer"},
      {R"({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]})", true,
       "messages[0].content[0].type", "not supported"},
      {R"({"messages": [{"role": "user", "content": "x", "colour": 1}]})", true,
       "messages[0].colour", "unknown field"},
      {R"({"messages": [{"role": "user", "content": "x"}], "temperature": "hot"})", true,
       "temperature", "must be a number"},
      {R"({"messages": [{"role": "user", "content": "x"}], "temperature": 3})", true,
       "temperature", "[0, 2]"},
      {R"({"messages": [{"role": "user", "content": "x"}], "max_tokens": -1})", true,
       "max_tokens", "must be in"},
      {R"({"messages": [{"role": "user", "content": "x"}], "max_tokens": 1.5})", true,
       "max_tokens", "an integer"},
      {R"({"messages": [{"role": "user", "content": "x"}], "n": 2})", true, "n", "must be 1"},
      {R"({"messages": [{"role": "user", "content": "x"}], "stop": [1]})", true, "stop[0]",
       "a string"},
      {R"({"messages": [{"role": "user", "content": "x"}], "stop": ["a","b","c","d","e"]})", true,
       "stop", "at most 4"},
      {R"({"messages": [{"role": "user", "content": "x"}], "logit_bias": {"abc": 1}})", true,
       "logit_bias", "not a token id"},
      {R"({"messages": [{"role": "user", "content": "x"}], "logit_bias": {"9999": 1}})", true,
       "logit_bias", "not a token id"},
      {R"({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 30})", true,
       "top_logprobs", "[0, 20]"},
      {R"({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2})", true,
       "top_logprobs", "needs 'logprobs'"},
      {R"({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]})", true,
       "tools", "not supported"},
      {R"({"messages": [{"role": "user", "content": "x"}], "frobnicate": true})", true,
       "frobnicate", "unknown field"},
      {R"({"messages": [{"role": "user", "content": "x"}], "prompt": "y"})", true, "prompt",
       "/v1/completions"},
      {R"({"prompt": 5})", false, "prompt", "a string or an array"},
      {R"({"prompt": ["a", "b"]})", false, "prompt", "several prompts"},
      {R"({"prompt": [1, 600]})", false, "prompt[1]", "[0, 511]"},
      {R"({"prompt": "x", "logprobs": 9})", false, "logprobs", "[0, 5]"},
      {R"({"prompt": "x", "echo": true})", false, "echo", "not supported"},
      {R"({"prompt": "x", "messages": []})", false, "messages", "/v1/chat/completions"},
      {R"({"prompt": "x", "seed": "1"})", false, "seed", "an integer"},
      {R"({"prompt": "x", "stream": 1})", false, "stream", "a boolean"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.body);
    ApiError e = Err(c.body, c.chat);
    EXPECT_EQ(e.http, 400);
    EXPECT_EQ(e.type, "invalid_request_error");
    EXPECT_EQ(e.param, c.param);
    EXPECT_THAT(e.message, HasSubstr(c.message));
  }
}

TEST(ParseRequestTest, ErrorJsonIsOpenAiShaped) {
  ApiError e;
  e.message = "m";
  e.param = "p";
  e.code = "c";
  EXPECT_EQ(ErrorJson(e).dump(),
            R"({"error":{"code":"c","message":"m","param":"p","type":"invalid_request_error"}})");
  e.param.clear();
  e.code.clear();
  EXPECT_EQ(ErrorJson(e).dump(),
            R"({"error":{"code":null,"message":"m","param":null,"type":"invalid_request_error"}})");
}

TEST(Utf8Test, CompletePrefixAndSanitize) {
  EXPECT_EQ(Utf8Complete("abc"), 3u);
  EXPECT_EQ(Utf8Complete("ab\xC3"), 2u);          // é cut after its first byte
  EXPECT_EQ(Utf8Complete("ab\xC3\xA9"), 4u);
  EXPECT_EQ(Utf8Complete("\xE2\x82"), 0u);        // € cut
  EXPECT_EQ(Utf8Complete("\xF0\x9F\x98\x80"), 4u);
  EXPECT_EQ(SanitizeUtf8("a\xC3\xA9"), "a\xC3\xA9");
  EXPECT_EQ(SanitizeUtf8("a\xC3"), "a\xEF\xBF\xBD");
  EXPECT_EQ(SanitizeUtf8("\xED\xA0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // a surrogate
  EXPECT_EQ(SanitizeUtf8("\xC0\xAF"), "\xEF\xBF\xBD\xEF\xBF\xBD");  // overlong
  EXPECT_EQ(Dump(nlohmann::json("\xFF")), "\"\xEF\xBF\xBD\"");
}

}  // namespace
}  // namespace vibrant::server
