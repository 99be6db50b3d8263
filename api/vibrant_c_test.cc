// The public C API, through include/vibrant/vibrant.h and libvibrant.so only,
// on the bundled stories260K; greedy text against llama.cpp's reference.
#include "vibrant/vibrant.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

const char kModel[] = VIBRANT_SOURCE_DIR "/tests/data/stories260K.gguf";

struct Reference {
  std::vector<int> prompt_tokens, generated;
  std::string text;
};

Reference LoadReference() {
  std::ifstream in(VIBRANT_SOURCE_DIR "/tests/data/stories260K.reference.json");
  nlohmann::json j = nlohmann::json::parse(in);
  for (const auto& c : j["cases"]) {
    if (c["prompt"] == "Once upon a time") {
      return {c["prompt_tokens"].get<std::vector<int>>(), c["generated"].get<std::vector<int>>(),
              c["generated_text"].get<std::string>()};
    }
  }
  ADD_FAILURE() << "no reference case";
  return {};
}

class CApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    cache_ = fs::path(::testing::TempDir()) / ("vb_capi_" + std::to_string(::getpid()));
    fs::remove_all(cache_);
  }
  void TearDown() override {
    if (ctx_ != nullptr) vb_context_free(ctx_);
    if (model_ != nullptr) vb_model_free(model_);
    fs::remove_all(cache_);
  }
  void Load() {
    vb_model_params mp = vb_model_default_params();
    mp.device = "cpu";
    const std::string dir = cache_.string();
    mp.plan_cache_dir = dir.c_str();
    mp.log = [](void* ud, const char* line) { static_cast<std::vector<std::string>*>(ud)->push_back(line); };
    mp.log_user_data = &log_;
    ASSERT_EQ(vb_model_load(kModel, &mp, &model_), VB_OK) << vb_last_error();
    vb_context_params cp = vb_context_default_params();
    cp.n_threads = 1;
    cp.sampling.temp = 0.0f;
    ASSERT_EQ(vb_context_create(model_, &cp, &ctx_), VB_OK) << vb_last_error();
  }

  fs::path cache_;
  std::vector<std::string> log_;
  vb_model* model_ = nullptr;
  vb_context* ctx_ = nullptr;
};

TEST_F(CApiTest, GreedyGenerationMatchesLlamaCpp) {
  Reference ref = LoadReference();
  Load();
  EXPECT_STREQ(vb_model_device(model_), "cpu");
  EXPECT_EQ(vb_model_n_vocab(model_), 512);
  EXPECT_EQ(vb_model_bos(model_), 1);
  EXPECT_TRUE(vb_model_is_eog(model_, vb_model_eos(model_)));

  const std::string prompt = "Once upon a time";
  vb_token small[2];
  const int32_t n = vb_tokenize(model_, prompt.data(), prompt.size(), true, true, small, 2);
  ASSERT_EQ(n, static_cast<int32_t>(ref.prompt_tokens.size()));
  std::vector<vb_token> ids(n);
  ASSERT_EQ(vb_tokenize(model_, prompt.data(), prompt.size(), true, true, ids.data(), n), n);
  EXPECT_EQ(std::vector<int>(ids.begin(), ids.end()), ref.prompt_tokens);
  EXPECT_EQ(small[0], ids[0]);
  EXPECT_EQ(small[1], ids[1]);

  struct Out {
    std::vector<int> ids;
    std::string text;
  } out;
  vb_generate_params gp = vb_generate_default_params();
  gp.n_predict = 32;
  vb_generate_result res;
  ASSERT_EQ(vb_generate(ctx_, ids.data(), n, &gp,
                        [](void* ud, vb_token t, const char* text, size_t len) {
                          auto* o = static_cast<Out*>(ud);
                          if (t >= 0) o->ids.push_back(t);
                          o->text.append(text, len);
                          return true;
                        },
                        &out, &res),
            VB_OK)
      << vb_last_error();
  EXPECT_EQ(out.ids, ref.generated);
  EXPECT_EQ(out.text, ref.text);
  EXPECT_EQ(res.n_prompt, n);
  EXPECT_EQ(res.n_reused, 0);
  EXPECT_EQ(res.n_generated, 32);
  EXPECT_STREQ(res.stop_reason, "n_predict");

  char piece[16];
  const int32_t len = vb_token_to_piece(model_, out.ids[0], piece, sizeof(piece));
  ASSERT_GT(len, 0);
  EXPECT_EQ(ref.text.substr(0, len), std::string(piece, len));
  EXPECT_EQ(vb_token_to_piece(model_, 99999, piece, sizeof(piece)), -1);
  EXPECT_THAT(vb_last_error(), HasSubstr("outside the vocabulary"));
}

TEST_F(CApiTest, PlanCacheCompilesOnceThenReuses) {
  Load();
  ASSERT_FALSE(log_.empty());
  EXPECT_THAT(log_.back(), HasSubstr("into the plan cache"));
  vb_context_free(ctx_);
  ctx_ = nullptr;
  vb_model_free(model_);
  model_ = nullptr;
  log_.clear();
  Load();
  ASSERT_FALSE(log_.empty());
  EXPECT_THAT(log_.back(), HasSubstr("plan cache: using"));
  int plans = 0;
  for (const auto& e : fs::directory_iterator(cache_)) plans += e.path().extension() == ".plan";
  EXPECT_EQ(plans, 1);
}

TEST_F(CApiTest, ChatTemplatesAndConversations) {
  Load();
  const vb_chat_message msgs[] = {{"user", "Hi!"}, {"assistant", " Hello. "}, {"user", "Bye"}};
  char buf[512];
  // Gemma, worked by hand from its template: assistant -> model, contents
  // trimmed; stories' tokenizer adds BOS itself, so "<s>" is not written.
  const int32_t n = vb_chat_apply_template(model_, "gemma", msgs, 3, true, buf, sizeof(buf));
  ASSERT_GT(n, 0) << vb_last_error();
  EXPECT_EQ(std::string(buf, n),
            "<start_of_turn>user\nHi!<end_of_turn>\n<start_of_turn>model\nHello.<end_of_turn>\n"
            "<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n");
  EXPECT_EQ(buf[n], '\0');
  EXPECT_EQ(vb_chat_apply_template(model_, "gemma", msgs, 3, true, buf, 4), n);  // size query
  EXPECT_EQ(vb_chat_apply_template(model_, "vicuna", msgs, 3, true, buf, sizeof(buf)), -1);
  EXPECT_THAT(vb_last_error(), HasSubstr("unknown chat template 'vicuna'"));

  vb_chat* chat = nullptr;
  ASSERT_EQ(vb_chat_create(ctx_, "chatml", &chat), VB_OK) << vb_last_error();
  vb_chat* second = nullptr;
  EXPECT_EQ(vb_chat_create(ctx_, "chatml", &second), VB_ERROR_INVALID_ARGUMENT);
  ASSERT_EQ(vb_chat_add(chat, "system", "Tell a story."), VB_OK);
  vb_generate_params gp = vb_generate_default_params();
  gp.n_predict = 6;
  vb_generate_result r1, r2;
  ASSERT_EQ(vb_chat_send(chat, "Once upon a time", &gp, nullptr, nullptr, &r1), VB_OK) << vb_last_error();
  ASSERT_EQ(vb_chat_send(chat, "And then", &gp, nullptr, nullptr, &r2), VB_OK) << vb_last_error();
  EXPECT_EQ(r1.n_reused, 0);
  EXPECT_EQ(r2.n_reused, r1.n_prompt + r1.n_generated - 1);
  EXPECT_GT(r2.n_prompt, r2.n_reused);

  // Long turns outgrow the context: with shifting (the default) every turn
  // is answered; without it, a turn fails.
  std::string long_turn;
  for (int i = 0; i < 40; ++i) long_turn += "Once upon a time ";
  for (int on : {1, 0}) {
    ASSERT_EQ(vb_chat_set_context_shift(chat, on), VB_OK);
    vb_status st = VB_OK;
    for (int turn = 0; turn < 12 && st == VB_OK; ++turn) {
      st = vb_chat_send(chat, long_turn.c_str(), &gp, nullptr, nullptr, &r1);
    }
    if (on) {
      EXPECT_EQ(st, VB_OK) << vb_last_error();
    } else {
      EXPECT_NE(st, VB_OK);
      EXPECT_THAT(vb_last_error(), HasSubstr("no longer fits the context"));
    }
  }
  EXPECT_EQ(vb_chat_set_context_shift(nullptr, 1), VB_ERROR_INVALID_ARGUMENT);
  vb_chat_free(chat);
}

TEST_F(CApiTest, ErrorsAreStatusesWithMessages) {
  vb_model* m = nullptr;
  EXPECT_EQ(vb_model_load("/nonexistent/model.gguf", nullptr, &m), VB_ERROR_NOT_FOUND);
  EXPECT_EQ(m, nullptr);
  EXPECT_THAT(vb_last_error(), HasSubstr("/nonexistent/model.gguf"));
  EXPECT_EQ(vb_model_load(VIBRANT_SOURCE_DIR "/tests", nullptr, &m), VB_ERROR_INVALID_ARGUMENT);
  EXPECT_THAT(vb_last_error(), HasSubstr("is a directory"));
  vb_model_params mp = vb_model_default_params();
  EXPECT_EQ(mp.n_gpu_layers, -1);
  mp.device = "tpu";
  EXPECT_EQ(vb_model_load(kModel, &mp, &m), VB_ERROR_INVALID_ARGUMENT);
  EXPECT_THAT(vb_last_error(), HasSubstr("auto, cpu or cuda"));
  // n_gpu_layers 0 is the CPU, whatever the device says (llama.cpp's -ngl 0).
  mp.device = "auto";
  mp.n_gpu_layers = 0;
  mp.use_plan_cache = false;
  ASSERT_EQ(vb_model_load(kModel, &mp, &m), VB_OK) << vb_last_error();
  EXPECT_STREQ(vb_model_device(m), "cpu");
  vb_model_free(m);
  m = nullptr;
  EXPECT_EQ(vb_model_load(nullptr, nullptr, &m), VB_ERROR_INVALID_ARGUMENT);
  EXPECT_THAT(std::string(vb_version()), HasSubstr("git "));

  Load();
  vb_context_params cp = vb_context_default_params();
  cp.sampling.top_k = -3;
  vb_context* c = nullptr;
  EXPECT_EQ(vb_context_create(model_, &cp, &c), VB_ERROR_INVALID_ARGUMENT);
  EXPECT_THAT(vb_last_error(), HasSubstr("top-k -3"));
  std::vector<vb_token> many(vb_model_n_ctx(model_) + 1, 5);
  EXPECT_EQ(vb_generate(ctx_, many.data(), static_cast<int32_t>(many.size()), nullptr, nullptr, nullptr, nullptr),
            VB_ERROR_OUT_OF_RANGE);
  EXPECT_THAT(vb_last_error(), HasSubstr("longer than the context"));
}

}  // namespace
