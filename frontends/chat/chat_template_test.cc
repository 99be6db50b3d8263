// Each family's rendering against a reference written by hand from the
// family's published Jinja template (the template text is the test's input;
// the expected strings were worked out by applying that template to the
// conversation below on paper, not produced by this code).
#include "frontends/chat/chat_template.h"

#include <chrono>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vibrant::chat {
namespace {

using ::testing::HasSubstr;

// <｜...｜> markers of DeepSeek (U+FF5C, U+2581).
#define DS_BOS "<\xef\xbd\x9c" "begin\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>"
#define DS_EOS "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>"
#define DS_USER "<\xef\xbd\x9cUser\xef\xbd\x9c>"
#define DS_ASSISTANT "<\xef\xbd\x9c" "Assistant\xef\xbd\x9c>"

const std::vector<Message> kChat = {
    {"system", "Be brief."},
    {"user", "Hi!"},
    {"assistant", " Hello. "},
    {"user", "What is 2+2?"},
};
// For templates that raise on a system message.
const std::vector<Message> kChatNoSystem(kChat.begin() + 1, kChat.end());

// Qwen/Qwen2.5-7B-Instruct (the branch without tools is what renders here).
constexpr char kQwen25[] = R"JINJA({%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {{- '<|im_end|>\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
)JINJA";

// teknium/OpenHermes-2.5-Mistral-7B: plain ChatML, no default system message.
constexpr char kChatmlPlain[] =
    R"({% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %})";

// meta-llama/Meta-Llama-3-8B-Instruct.
constexpr char kLlama3[] =
    R"({% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>

'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>

' }}{% endif %})";

// meta-llama/Llama-3.1-8B-Instruct (the parts without tools).
constexpr char kLlama31[] = R"JINJA({{- bos_token }}
{%- if custom_tools is defined %}
    {%- set tools = custom_tools %}
{%- endif %}
{%- if not tools_in_user_message is defined %}
    {%- set tools_in_user_message = true %}
{%- endif %}
{%- if not date_string is defined %}
    {%- set date_string = "26 Jul 2024" %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}

{#- This block extracts the system message, so we can slot it into the right place. #}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}

{#- System message + builtin tools #}
{{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
{%- if builtin_tools is defined or tools is not none %}
    {{- "Environment: ipython\n" }}
{%- endif %}
{{- "Cutting Knowledge Date: December 2023\n" }}
{{- "Today Date: " + date_string + "\n\n" }}
{{- system_message }}
{{- "<|eot_id|>" }}

{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}
)JINJA";

// meta-llama/Llama-2-7b-chat-hf.
constexpr char kLlama2Chat[] =
    R"({% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\n' + system_message + '\n<</SYS>>\n\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %})";

// mistralai/Mistral-7B-Instruct-v0.2.
constexpr char kMistral02[] =
    R"({{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %})";

// Mistral's "v1" template (mistral-common), with a system message.
constexpr char kMistralV1[] = R"JINJA({%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content'] %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set loop_messages = messages %}
{%- endif %}

{{- bos_token }}
{%- for message in loop_messages %}
    {%- if message['role'] == 'user' %}
        {%- if loop.first and system_message is defined %}
            {{- ' [INST] ' + system_message + '\n\n' + message['content'] + ' [/INST]' }}
        {%- else %}
            {{- ' [INST] ' + message['content'] + ' [/INST]' }}
        {%- endif %}
    {%- elif message['role'] == 'assistant' %}
        {{- ' ' + message['content'] + eos_token}}
    {%- endif %}
{%- endfor %}
)JINJA";

// mistralai/Mistral-7B-Instruct-v0.3 (tool parts shortened).
constexpr char kMistralV3[] = R"JINJA({%- if messages[0]["role"] == "system" %}
    {%- set system_message = messages[0]["content"] %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set loop_messages = messages %}
{%- endif %}
{{- bos_token }}
{%- for message in loop_messages %}
    {%- if message["role"] == "user" %}
        {%- if tools is not none and (message == user_messages[-1]) %}
            {{- "[AVAILABLE_TOOLS] [" }}
            {{- "[/AVAILABLE_TOOLS]" }}
        {%- endif %}
        {%- if loop.last and system_message is defined %}
            {{- "[INST] " + system_message + "\n\n" + message["content"] + "[/INST]" }}
        {%- else %}
            {{- "[INST] " + message["content"] + "[/INST]" }}
        {%- endif %}
    {%- elif message["role"] == "assistant" %}
        {{- " " + message["content"]|trim + eos_token}}
    {%- endif %}
{%- endfor %}
)JINJA";

// mistralai/Mistral-Large-Instruct-2411 ("v7").
constexpr char kMistralV7[] =
    R"({{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + '[/INST]' }}{% elif message['role'] == 'system' %}{{ '[SYSTEM_PROMPT] ' + message['content'] + '[/SYSTEM_PROMPT]' }}{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'] + eos_token }}{% else %}{{ raise_exception('Only user, system and assistant roles are supported!') }}{% endif %}{% endfor %})";

// microsoft/Phi-3.5-mini-instruct.
constexpr char kPhi35[] =
    R"({% for message in messages %}{% if message['role'] == 'system' and message['content'] %}{{'<|system|>
' + message['content'] + '<|end|>
'}}{% elif message['role'] == 'user' %}{{'<|user|>
' + message['content'] + '<|end|>
'}}{% elif message['role'] == 'assistant' %}{{'<|assistant|>
' + message['content'] + '<|end|>
'}}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>
' }}{% else %}{{ eos_token }}{% endif %})";

// microsoft/phi-4.
constexpr char kPhi4[] =
    R"({% for message in messages %}{% if (message['role'] == 'system') %}{{'<|im_start|>system<|im_sep|>' + message['content'] + '<|im_end|>'}}{% elif (message['role'] == 'user') %}{{'<|im_start|>user<|im_sep|>' + message['content'] + '<|im_end|><|im_start|>assistant<|im_sep|>'}}{% elif (message['role'] == 'assistant') %}{{message['content'] + '<|im_end|>'}}{% endif %}{% endfor %})";

// google/gemma-2-9b-it.
constexpr char kGemma2[] =
    R"({{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '
' + message['content'] | trim + '<end_of_turn>
' }}{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model
'}}{% endif %})";

// google/gemma-3-4b-it (string contents only).
constexpr char kGemma3[] = R"JINJA({{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else "") }}
    {{ message['content'] | trim }}
    {{ '<end_of_turn>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\n'}}
{%- endif -%}
)JINJA";

// deepseek-ai/deepseek-llm-7b-chat.
constexpr char kDeepseekLlm[] =
    R"({% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ 'User: ' + message['content'] + '\n\n' }}{% elif message['role'] == 'assistant' %}{{ 'Assistant: ' + message['content'] + eos_token }}{% elif message['role'] == 'system' %}{{ message['content'] + '\n\n' }}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %})";

// deepseek-ai/DeepSeek-R1 (tool parts shortened).
constexpr char kDeepseekR1[] =
    "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}"
    "{% set ns = namespace(is_first=false, is_tool=false, is_output_first=true, system_prompt='', is_first_sp=true) %}"
    "{%- for message in messages %}{%- if message['role'] == 'system' %}{%- if ns.is_first_sp %}"
    "{% set ns.system_prompt = ns.system_prompt + message['content'] %}{% set ns.is_first_sp = false %}"
    "{%- else %}{% set ns.system_prompt = ns.system_prompt + '\\n\\n' + message['content'] %}{%- endif %}"
    "{%- endif %}{%- endfor %}{{ bos_token }}{{ ns.system_prompt }}"
    "{%- for message in messages %}{%- if message['role'] == 'user' %}{%- set ns.is_tool = false -%}"
    "{{'" DS_USER "' + message['content']}}{%- endif %}"
    "{%- if message['role'] == 'assistant' and 'tool_calls' not in message %}{%- if ns.is_tool %}"
    "{{'<\xef\xbd\x9ctool\xe2\x96\x81outputs\xe2\x96\x81" "end\xef\xbd\x9c>' + message['content'] + '" DS_EOS "'}}"
    "{%- set ns.is_tool = false -%}{%- else %}{% set content = message['content'] %}"
    "{% if '</think>' in content %}{% set content = content.split('</think>')[-1] %}{% endif %}"
    "{{'" DS_ASSISTANT "' + content + '" DS_EOS "'}}{%- endif %}{%- endif %}{%- endfor -%}"
    "{% if add_generation_prompt and not ns.is_tool %}{{'" DS_ASSISTANT "<think>\\n'}}{% endif %}";

ChatTemplate Detect(const char* jinja, const std::string& bos, const std::string& eos) {
  absl::StatusOr<ChatTemplate> t = DetectTemplate(jinja, "test template");
  EXPECT_TRUE(t.ok()) << t.status();
  if (!t.ok()) return {};
  t->bos_token = bos;
  t->eos_token = eos;
  return *t;
}

std::string RenderOk(const ChatTemplate& t, const std::vector<Message>& m, bool add = true) {
  absl::StatusOr<std::string> s = Render(t, m, add);
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? *s : "";
}

TEST(ChatTemplateTest, Qwen25ChatmlWithItsDefaultSystemMessage) {
  ChatTemplate t = Detect(kQwen25, "", "<|im_end|>");
  EXPECT_EQ(t.family, Family::kChatml);
  EXPECT_EQ(t.default_system, "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.");
  EXPECT_EQ(RenderOk(t, kChat),
            "<|im_start|>system\nBe brief.<|im_end|>\n"
            "<|im_start|>user\nHi!<|im_end|>\n"
            "<|im_start|>assistant\n Hello. <|im_end|>\n"
            "<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
            "<|im_start|>assistant\n");
  EXPECT_EQ(RenderOk(t, {{"user", "Hi!"}}),
            "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
            "assistant.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(RenderOk(t, {{"user", "Hi!"}}, /*add=*/false),
            "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
            "assistant.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n");
}

TEST(ChatTemplateTest, PlainChatmlHasNoDefaultSystemMessage) {
  ChatTemplate t = Detect(kChatmlPlain, "<s>", "</s>");
  EXPECT_EQ(t.family, Family::kChatml);
  EXPECT_EQ(t.default_system, "");
  EXPECT_EQ(RenderOk(t, {{"user", "Hi!"}}),
            "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n");
}

// The default system message is the first literal body: a head whose text up
// to <|im_end|> holds a quote is dynamic, and a later head before the same
// <|im_end|> can still hold a literal one.
TEST(ChatTemplateTest, ChatmlDefaultSystemSkipsDynamicBodies) {
  absl::StatusOr<ChatTemplate> t = DetectTemplate(
      "{{'<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>'}}"
      "{{'<|im_start|>system\\nYou are Vibrant.<|im_end|>'}}",
      "t");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->default_system, "You are Vibrant.");
  t = DetectTemplate("<|im_start|>system\n'x' <|im_start|>system\nplain<|im_end|>", "t");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->default_system, "plain");
  t = DetectTemplate("<|im_start|>system\nplain' <|im_start|>system\n<|im_end|>", "t");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->default_system, "");
}

// Issue #16: tokenizer.chat_template comes from the model file. 50,000 heads
// before one <|im_end|> (1 MiB) hung every tool that reads the template when
// each head searched for its own end: the old code, -O2, on the loaded 2-core
// dev machine took 0.25 s for 64 KiB, 3.5 s for 256 KiB, 57 s for 1 MiB
// (quadratic). Now one pass; the bound leaves room for load and sanitizers.
TEST(ChatTemplateTest, ManyChatmlHeadsAreLinear) {
  std::string t;
  while (t.size() < (size_t{1} << 20)) t += "<|im_start|>system\\n'";
  t += "<|im_end|>";
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<ChatTemplate> d = DetectTemplate(t, "big.gguf");
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->family, Family::kChatml);
  EXPECT_EQ(d->default_system, "");
  EXPECT_LT(seconds, 3.0);
}

TEST(ChatTemplateTest, Llama3) {
  ChatTemplate t = Detect(kLlama3, "<|begin_of_text|>", "<|eot_id|>");
  EXPECT_EQ(t.family, Family::kLlama3);
  EXPECT_EQ(RenderOk(t, kChat),
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

TEST(ChatTemplateTest, Llama31AddsTheDateHeader) {
  ChatTemplate t = Detect(kLlama31, "<|begin_of_text|>", "<|eot_id|>");
  EXPECT_EQ(t.family, Family::kLlama31);
  EXPECT_EQ(t.date_string, "26 Jul 2024");
  EXPECT_EQ(RenderOk(t, kChat),
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
            "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n"
            "Be brief.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
  // Without a system message the header is still there, empty.
  EXPECT_EQ(RenderOk(t, {{"user", "Hi!"}}),
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
            "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

TEST(ChatTemplateTest, Llama2ChatPutsBosInEveryTurn) {
  ChatTemplate t = Detect(kLlama2Chat, "<s>", "</s>");
  EXPECT_EQ(t.family, Family::kLlama2Sys);
  EXPECT_EQ(RenderOk(t, kChat),
            "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi! [/INST] Hello. </s>"
            "<s>[INST] What is 2+2? [/INST]");
}

TEST(ChatTemplateTest, Mistral02) {
  ChatTemplate t = Detect(kMistral02, "<s>", "</s>");
  EXPECT_EQ(t.family, Family::kLlama2);
  EXPECT_EQ(RenderOk(t, kChatNoSystem),
            "<s>[INST] Hi! [/INST] Hello. </s>[INST] What is 2+2? [/INST]");
  // The template raises on a system message; like llama.cpp, it is folded
  // into the first user turn instead.
  EXPECT_EQ(RenderOk(t, kChat),
            "<s>[INST] Be brief.\n\nHi! [/INST] Hello. </s>[INST] What is 2+2? [/INST]");
}

TEST(ChatTemplateTest, MistralV1) {
  ChatTemplate t = Detect(kMistralV1, "<s>", "</s>");
  EXPECT_EQ(t.family, Family::kMistralV1);
  EXPECT_EQ(RenderOk(t, kChat),
            "<s> [INST] Be brief.\n\nHi! [/INST]  Hello. </s> [INST] What is 2+2? [/INST]");
}

TEST(ChatTemplateTest, MistralV3PutsTheSystemMessageInTheLastTurn) {
  ChatTemplate t = Detect(kMistralV3, "<s>", "</s>");
  EXPECT_EQ(t.family, Family::kMistralV3);
  EXPECT_EQ(RenderOk(t, kChat),
            "<s>[INST] Hi![/INST] Hello.</s>[INST] Be brief.\n\nWhat is 2+2?[/INST]");
}

TEST(ChatTemplateTest, MistralV7) {
  ChatTemplate t = Detect(kMistralV7, "<s>", "</s>");
  EXPECT_EQ(t.family, Family::kMistralV7);
  EXPECT_EQ(RenderOk(t, kChat),
            "<s>[SYSTEM_PROMPT] Be brief.[/SYSTEM_PROMPT][INST] Hi![/INST]  Hello. </s>"
            "[INST] What is 2+2?[/INST]");
}

TEST(ChatTemplateTest, Phi35) {
  ChatTemplate t = Detect(kPhi35, "<s>", "<|endoftext|>");
  EXPECT_EQ(t.family, Family::kPhi3);
  EXPECT_EQ(RenderOk(t, kChat),
            "<|system|>\nBe brief.<|end|>\n<|user|>\nHi!<|end|>\n<|assistant|>\n Hello. <|end|>\n"
            "<|user|>\nWhat is 2+2?<|end|>\n<|assistant|>\n");
  EXPECT_EQ(RenderOk(t, {{"system", ""}, {"user", "Hi!"}}, /*add=*/false),
            "<|user|>\nHi!<|end|>\n<|endoftext|>");
}

TEST(ChatTemplateTest, Phi4) {
  ChatTemplate t = Detect(kPhi4, "<|endoftext|>", "<|im_end|>");
  EXPECT_EQ(t.family, Family::kPhi4);
  EXPECT_EQ(RenderOk(t, kChat),
            "<|im_start|>system<|im_sep|>Be brief.<|im_end|>"
            "<|im_start|>user<|im_sep|>Hi!<|im_end|><|im_start|>assistant<|im_sep|> Hello. <|im_end|>"
            "<|im_start|>user<|im_sep|>What is 2+2?<|im_end|><|im_start|>assistant<|im_sep|>");
}

TEST(ChatTemplateTest, Gemma2AndGemma3) {
  ChatTemplate t2 = Detect(kGemma2, "<bos>", "<eos>");
  EXPECT_EQ(t2.family, Family::kGemma);
  EXPECT_EQ(RenderOk(t2, kChatNoSystem),
            "<bos><start_of_turn>user\nHi!<end_of_turn>\n<start_of_turn>model\nHello.<end_of_turn>\n"
            "<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n");
  ChatTemplate t3 = Detect(kGemma3, "<bos>", "<eos>");
  EXPECT_EQ(t3.family, Family::kGemma);
  EXPECT_EQ(RenderOk(t3, kChat),
            "<bos><start_of_turn>user\nBe brief.\n\nHi!<end_of_turn>\n"
            "<start_of_turn>model\nHello.<end_of_turn>\n"
            "<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n");
}

TEST(ChatTemplateTest, DeepseekLlm) {
  ChatTemplate t = Detect(kDeepseekLlm, DS_BOS, DS_EOS);
  EXPECT_EQ(t.family, Family::kDeepseek2);
  EXPECT_EQ(RenderOk(t, kChat), DS_BOS "Be brief.\n\nUser: Hi!\n\nAssistant:  Hello. " DS_EOS
                                       "User: What is 2+2?\n\nAssistant:");
}

TEST(ChatTemplateTest, DeepseekR1DropsPastReasoningAndOpensThinking) {
  ChatTemplate t = Detect(kDeepseekR1, DS_BOS, DS_EOS);
  EXPECT_EQ(t.family, Family::kDeepseek3);
  EXPECT_TRUE(t.think_generation_prompt);
  EXPECT_TRUE(t.strip_think);
  const std::vector<Message> chat = {{"system", "Be brief."},
                                     {"user", "Hi!"},
                                     {"assistant", "<think>\nhmm\n</think>\n\nHello."},
                                     {"user", "What is 2+2?"}};
  EXPECT_EQ(RenderOk(t, chat), DS_BOS "Be brief." DS_USER "Hi!" DS_ASSISTANT "\n\nHello." DS_EOS
                                      DS_USER "What is 2+2?" DS_ASSISTANT "<think>\n");
  // By name (DeepSeek-V3's template): no <think>, reasoning kept.
  ChatTemplate v3 = *TemplateFromName("deepseek3");
  EXPECT_EQ(RenderOk(v3, {{"user", "Hi!"}}), DS_USER "Hi!" DS_ASSISTANT);
}

TEST(ChatTemplateTest, NamesAndErrors) {
  for (const char* name : {"chatml", "llama2", "llama2-sys", "mistral-v1", "mistral-v3",
                           "mistral-v3-tekken", "mistral-v7", "mistral-v7-tekken", "llama3",
                           "llama3.1", "phi3", "phi4", "gemma", "deepseek2", "deepseek3"}) {
    absl::StatusOr<ChatTemplate> t = TemplateFromName(name);
    ASSERT_TRUE(t.ok()) << name;
    EXPECT_EQ(FamilyName(t->family), name);
  }
  absl::StatusOr<ChatTemplate> bad = TemplateFromName("vicuna");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("unknown chat template 'vicuna'"));
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("chatml, llama2"));

  absl::StatusOr<ChatTemplate> unknown =
      DetectTemplate("{% for m in messages %}USER: {{ m.content }}{% endfor %}", "m.gguf: tokenizer.chat_template");
  ASSERT_FALSE(unknown.ok());
  EXPECT_THAT(std::string(unknown.status().message()),
              HasSubstr("m.gguf: tokenizer.chat_template: not a chat template Vibrant recognises"));
  EXPECT_THAT(std::string(unknown.status().message()), HasSubstr("--chat-template"));

  // --chat-template takes a name or a template's text.
  EXPECT_EQ(TemplateFromNameOrText("gemma")->family, Family::kGemma);
  EXPECT_EQ(TemplateFromNameOrText(kPhi4)->family, Family::kPhi4);
  EXPECT_FALSE(TemplateFromNameOrText("gemmma").ok());

  EXPECT_FALSE(Render(*TemplateFromName("chatml"), {{"", "x"}}, true).ok());
  EXPECT_EQ(StripLeadingBos("<s>[INST] x", "<s>"), "[INST] x");
  EXPECT_EQ(StripLeadingBos("[INST] x", "<s>"), "[INST] x");
  EXPECT_EQ(StripLeadingBos("<s>x", ""), "<s>x");
}

}  // namespace
}  // namespace vibrant::chat
