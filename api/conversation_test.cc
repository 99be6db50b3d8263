// Conversations on the bundled stories260K (CPU): the second turn prefills
// only what the KV cache lacks, and generates what a fresh session given the
// same tokens generates.
#include "api/conversation.h"

#include <memory>
#include <string>
#include <vector>

#include "api/model.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vibrant {
namespace {

using ::testing::HasSubstr;

class ConversationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ModelOptions o;
    o.device = "cpu";
    o.use_plan_cache = false;
    o.n_ctx = 256;
    absl::StatusOr<std::unique_ptr<Model>> m = Model::Load(VIBRANT_SOURCE_DIR "/tests/data/stories260K.gguf", o);
    ASSERT_TRUE(m.ok()) << m.status();
    model_ = *std::move(m);
  }
  std::unique_ptr<Session> NewSession() {
    absl::StatusOr<std::unique_ptr<Executor>> e = model_->CreateExecutor(1);
    EXPECT_TRUE(e.ok()) << e.status();
    executors_.push_back(*std::move(e));
    SamplerParams p;
    p.temp = 0.0f;
    return std::make_unique<Session>(executors_.back().get(), &model_->tokenizer(), model_->n_ctx(),
                                     model_->max_tokens(), model_->n_vocab(), *Sampler::Create(p));
  }
  chat::ChatTemplate Template(const std::string& name) {
    std::string note;
    absl::StatusOr<chat::ChatTemplate> t =
        ResolveChatTemplate(model_->path(), model_->chat_template_text(), name, model_->tokenizer(), &note);
    EXPECT_TRUE(t.ok()) << t.status();
    return *t;
  }

  std::unique_ptr<Model> model_;
  std::vector<std::unique_ptr<Executor>> executors_;
};

TEST_F(ConversationTest, SecondTurnPrefillsOnlyTheNewTokens) {
  auto session = NewSession();
  Conversation c(session.get(), &model_->tokenizer(), Template("chatml"));
  c.Add({"system", "Tell a story."});
  GenerateOptions o;
  o.n_predict = 8;
  absl::StatusOr<GenerateResult> r1 = c.Send("Once upon a time", o, nullptr);
  ASSERT_TRUE(r1.ok()) << r1.status();
  EXPECT_EQ(r1->n_reused, 0);
  ASSERT_EQ(r1->stop, StopReason::kNPredict);
  ASSERT_EQ(c.messages().size(), 3u);
  EXPECT_EQ(c.messages()[2].role, "assistant");
  EXPECT_EQ(c.messages()[2].content, r1->text);

  const std::vector<int32_t> cached_after_1 = session->cached_tokens();
  absl::StatusOr<GenerateResult> r2 = c.Send("The end", o, nullptr);
  ASSERT_TRUE(r2.ok()) << r2.status();
  // Everything of turn 1 was in the cache except its last token (sampled, never fed).
  EXPECT_EQ(r2->n_reused, r1->n_prompt + r1->n_generated - 1);
  EXPECT_EQ(static_cast<size_t>(r2->n_reused), cached_after_1.size());
  // What was prefilled: that token, then the rendering's new text.
  const std::string full_now = *chat::Render(
      c.chat_template(), std::vector<chat::Message>(c.messages().begin(), c.messages().begin() + 4),
      /*add_assistant=*/true);
  const std::string turn1_text = *chat::Render(
      c.chat_template(), std::vector<chat::Message>(c.messages().begin(), c.messages().begin() + 2), true);
  ASSERT_EQ(full_now.compare(0, turn1_text.size() + r1->text.size(), turn1_text + r1->text), 0);
  const std::string delta = full_now.substr(turn1_text.size() + r1->text.size());
  EXPECT_EQ(delta.substr(0, 11), "<|im_end|>\n");  // ChatML closes the reply
  const std::vector<int32_t> delta_ids = *model_->tokenizer().Encode(delta, false, true);
  EXPECT_EQ(r2->n_prefilled, 1 + static_cast<int64_t>(delta_ids.size()));
  EXPECT_EQ(r2->n_prompt, r1->n_prompt + r1->n_generated + static_cast<int64_t>(delta_ids.size()));

  // A fresh session given the same tokens generates the same reply.
  std::vector<int32_t> all(cached_after_1);
  all.push_back(r1->tokens.back());
  all.insert(all.end(), delta_ids.begin(), delta_ids.end());
  auto fresh = NewSession();
  absl::StatusOr<GenerateResult> f = fresh->Generate(all, o, nullptr);
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->n_reused, 0);
  EXPECT_EQ(f->tokens, r2->tokens);
}

TEST_F(ConversationTest, ARenderingThatChangesEarlierTextRewritesTheCacheFromThere) {
  // Mistral v3 puts the system message into the last user turn: turn 2's
  // rendering differs from turn 1's right after its first "[INST] ", so only
  // the tokens before that are reused, and the reply is still what a fresh
  // session computes for the same tokens.
  auto session = NewSession();
  Conversation c(session.get(), &model_->tokenizer(), Template("mistral-v3"));
  c.Add({"system", "Tell a story."});
  GenerateOptions o;
  o.n_predict = 6;
  absl::StatusOr<GenerateResult> r1 = c.Send("Once upon a time", o, nullptr);
  ASSERT_TRUE(r1.ok()) << r1.status();
  absl::StatusOr<GenerateResult> r2 = c.Send("Go on", o, nullptr);
  ASSERT_TRUE(r2.ok()) << r2.status();
  EXPECT_GT(r2->n_reused, 0);
  EXPECT_LT(r2->n_reused, r1->n_prompt);
  std::vector<int32_t> all(session->cached_tokens().begin(),
                           session->cached_tokens().begin() + r2->n_prompt);
  auto fresh = NewSession();
  absl::StatusOr<GenerateResult> f = fresh->Generate(all, o, nullptr);
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->tokens, r2->tokens);
  // The cache holds what the template renders for the whole conversation.
  std::string rendered = *c.RenderPrompt();
  EXPECT_NE(rendered.find("[INST] Once upon a time[/INST]"), std::string::npos) << rendered;
}

TEST_F(ConversationTest, StopStringsShapeTheReplyAndOverflowIsAnError) {
  auto session = NewSession();
  Conversation c(session.get(), &model_->tokenizer(), Template("chatml"));
  GenerateOptions o;
  o.n_predict = 40;
  absl::StatusOr<GenerateResult> plain = c.Send("Once upon a time", o, nullptr);
  ASSERT_TRUE(plain.ok());
  ASSERT_GT(plain->text.size(), 10u);
  c.Clear();
  EXPECT_TRUE(session->cached_tokens().empty());
  o.stops = {{plain->text.substr(5, 3), false}};
  absl::StatusOr<GenerateResult> cut = c.Send("Once upon a time", o, nullptr);
  ASSERT_TRUE(cut.ok());
  EXPECT_EQ(cut->stop, StopReason::kStopString);
  EXPECT_EQ(c.messages().back().content, cut->text);
  EXPECT_LE(cut->text.size(), 5u);

  // A message that does not fit the context: an error, and the conversation
  // is as it was.
  const size_t before = c.messages().size();
  absl::StatusOr<GenerateResult> big = c.Send(std::string(3000, 'a'), o, nullptr);
  ASSERT_FALSE(big.ok());
  EXPECT_THAT(std::string(big.status().message()), HasSubstr("no longer fits the context of 256"));
  EXPECT_EQ(c.messages().size(), before);
}

// Context shifting: when the conversation and room for the reply outgrow the
// context, the oldest turns leave (the system message stays), and the reply
// is what a fresh conversation holding only the remaining messages gives.
// Off, the same conversation ends in the overflow error.
TEST_F(ConversationTest, TheOldestTurnsLeaveWhenTheContextIsFull) {
  auto session = NewSession();
  Conversation c(session.get(), &model_->tokenizer(), Template("chatml"));
  c.Add({"system", "Tell a story."});
  GenerateOptions o;
  o.n_predict = 40;
  o.ignore_eos = true;
  int64_t dropped = 0;
  int turn = 0;
  for (; turn < 12 && dropped == 0; ++turn) {
    const size_t before = c.messages().size();
    absl::StatusOr<GenerateResult> r = c.Send("Once upon a time there was a cat " + std::to_string(turn), o, nullptr);
    ASSERT_TRUE(r.ok()) << "turn " << turn << ": " << r.status();
    dropped = c.last_dropped();
    EXPECT_EQ(c.messages().size(), before + 2 - dropped);
  }
  ASSERT_GT(dropped, 0) << "12 turns of 40 tokens should outgrow a context of 256";
  EXPECT_EQ(dropped % 2, 0) << "turns leave as user + assistant pairs";
  EXPECT_EQ(c.messages().front().role, "system");
  EXPECT_EQ(c.messages().front().content, "Tell a story.");

  // The same reply from a fresh conversation given only what was kept.
  auto fresh = NewSession();
  Conversation f(fresh.get(), &model_->tokenizer(), Template("chatml"));
  const std::vector<chat::Message> kept = c.messages();
  for (size_t i = 0; i + 2 < kept.size(); ++i) f.Add(kept[i]);
  absl::StatusOr<GenerateResult> again = f.Send(kept[kept.size() - 2].content, o, nullptr);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->text, kept.back().content);

  // Off (--no-context-shift): the same turns end in the overflow error.
  auto off_session = NewSession();
  Conversation off(off_session.get(), &model_->tokenizer(), Template("chatml"));
  off.set_context_shift(false);
  off.Add({"system", "Tell a story."});
  absl::Status last = absl::OkStatus();
  for (int i = 0; i < 12 && last.ok(); ++i) {
    last = off.Send("Once upon a time there was a cat " + std::to_string(i), o, nullptr).status();
  }
  EXPECT_THAT(std::string(last.message()), HasSubstr("no longer fits the context of 256"));
}

TEST_F(ConversationTest, TemplatesResolveFromNameModelOrFallback) {
  std::string note;
  // stories260K has no chat template: chatml, with a note.
  absl::StatusOr<chat::ChatTemplate> t =
      ResolveChatTemplate("m.gguf", "", "", model_->tokenizer(), &note);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->family, chat::Family::kChatml);
  EXPECT_THAT(note, HasSubstr("m.gguf has no chat template"));
  EXPECT_EQ(t->bos_token, "<s>");
  EXPECT_EQ(t->eos_token, "</s>");
  absl::StatusOr<chat::ChatTemplate> bad =
      ResolveChatTemplate("m.gguf", "{{ weird }}", "", model_->tokenizer(), &note);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("m.gguf: tokenizer.chat_template: not a chat template"));
  EXPECT_EQ(ResolveChatTemplate("m.gguf", "{{ weird }}", "gemma", model_->tokenizer(), &note)->family,
            chat::Family::kGemma);
}

}  // namespace
}  // namespace vibrant
