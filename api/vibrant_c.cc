// The C API (include/vibrant/vibrant.h) over api/model.h, runtime/generate.h
// and api/conversation.h. No exception or abort crosses it: every failure is
// a vb_status and a message in vb_last_error().
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "api/conversation.h"
#include "api/model.h"
#include "api/version.h"
#include "frontends/chat/chat_template.h"
#include "runtime/generate.h"
#include "runtime/sampler.h"
#include "vibrant/vibrant.h"

struct vb_model {
  std::unique_ptr<vibrant::Model> model;
};

struct vb_context {
  vb_model* model;
  std::unique_ptr<vibrant::Executor> exec;
  std::unique_ptr<vibrant::Session> session;
  bool has_chat = false;
};

struct vb_chat {
  vb_context* ctx;
  std::unique_ptr<vibrant::Conversation> conversation;
};

namespace {

thread_local std::string g_last_error;

vb_status Fail(const absl::Status& s) {
  g_last_error = std::string(s.message());
  switch (s.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kDataLoss:
    case absl::StatusCode::kPermissionDenied:
      return VB_ERROR_INVALID_ARGUMENT;
    case absl::StatusCode::kNotFound:
      return VB_ERROR_NOT_FOUND;
    case absl::StatusCode::kOutOfRange:
      return VB_ERROR_OUT_OF_RANGE;
    case absl::StatusCode::kUnimplemented:
      return VB_ERROR_UNSUPPORTED;
    default:
      return VB_ERROR_INTERNAL;
  }
}

vb_status Null(const char* what) {
  return Fail(absl::InvalidArgumentError(absl::StrCat(what, " is NULL")));
}

vibrant::GenerateOptions ToOptions(const vb_generate_params* p) {
  vibrant::GenerateOptions o;
  vb_generate_params d = vb_generate_default_params();
  if (p == nullptr) p = &d;
  o.n_predict = p->n_predict;
  o.ignore_eos = p->ignore_eos;
  for (size_t i = 0; p->stop != nullptr && i < p->n_stop; ++i) {
    if (p->stop[i] != nullptr && p->stop[i][0] != '\0') o.stops.push_back({p->stop[i], false});
  }
  return o;
}

vibrant::TokenCallback ToCallback(vb_token_callback cb, void* user_data) {
  if (cb == nullptr) return nullptr;
  return [cb, user_data](const vibrant::TokenEvent& e) {
    return cb(user_data, e.token, e.text.data(), e.text.size());
  };
}

void FillResult(const vibrant::GenerateResult& r, vb_generate_result* out) {
  if (out == nullptr) return;
  out->n_prompt = static_cast<int32_t>(r.n_prompt);
  out->n_reused = static_cast<int32_t>(r.n_reused);
  out->n_generated = static_cast<int32_t>(r.n_generated);
  out->prefill_ms = r.prefill_seconds * 1e3;
  out->generate_ms = r.generate_seconds * 1e3;
  out->stop_reason = vibrant::StopReasonName(r.stop).data();  // static strings
}

absl::StatusOr<vibrant::chat::ChatTemplate> TemplateFor(const vb_model* m, const char* tmpl) {
  const vibrant::Model& model = *m->model;
  return vibrant::ResolveChatTemplate(model.path(), model.chat_template_text(),
                                      tmpl == nullptr ? "" : tmpl, model.tokenizer(), nullptr);
}

}  // namespace

extern "C" {

const char* vb_version(void) {
  static const std::string v = vibrant::VersionLine("vibrant").substr(8);
  return v.c_str();
}

const char* vb_last_error(void) { return g_last_error.c_str(); }

vb_model_params vb_model_default_params(void) {
  vb_model_params p;
  p.device = "auto";
  p.n_ctx = 0;
  p.max_tokens = 0;
  p.use_plan_cache = true;
  p.plan_cache_dir = nullptr;
  p.log = nullptr;
  p.log_user_data = nullptr;
  p.n_gpu_layers = -1;
  return p;
}

vb_status vb_model_load(const char* path, const vb_model_params* params, vb_model** out) {
  if (path == nullptr) return Null("path");
  if (out == nullptr) return Null("out");
  *out = nullptr;
  vb_model_params d = vb_model_default_params();
  if (params == nullptr) params = &d;
  vibrant::ModelOptions o;
  o.device = params->device == nullptr ? "auto" : params->device;
  o.n_ctx = params->n_ctx;
  o.max_tokens = params->max_tokens;
  o.use_plan_cache = params->use_plan_cache;
  if (params->n_gpu_layers == 0) {
    o.device = "cpu";
  } else if (params->n_gpu_layers > 0) {
    o.device = "cuda";
    o.gpu_layers = params->n_gpu_layers;
  }
  if (params->plan_cache_dir != nullptr) o.plan_cache_dir = params->plan_cache_dir;
  if (params->log != nullptr) {
    vb_log_callback log = params->log;
    void* ud = params->log_user_data;
    o.log = [log, ud](std::string_view line) { log(ud, std::string(line).c_str()); };
  }
  absl::StatusOr<std::unique_ptr<vibrant::Model>> m = vibrant::Model::Load(path, o);
  if (!m.ok()) return Fail(m.status());
  *out = new vb_model{*std::move(m)};
  return VB_OK;
}

void vb_model_free(vb_model* model) { delete model; }

const char* vb_model_device(const vb_model* m) { return m == nullptr ? "" : m->model->device().c_str(); }
int32_t vb_model_n_ctx(const vb_model* m) { return m == nullptr ? 0 : static_cast<int32_t>(m->model->n_ctx()); }
int32_t vb_model_n_vocab(const vb_model* m) {
  return m == nullptr ? 0 : static_cast<int32_t>(m->model->n_vocab());
}
vb_token vb_model_bos(const vb_model* m) { return m == nullptr ? -1 : m->model->tokenizer().bos_id(); }
vb_token vb_model_eos(const vb_model* m) { return m == nullptr ? -1 : m->model->tokenizer().eos_id(); }
bool vb_model_is_eog(const vb_model* m, vb_token t) {
  if (m == nullptr || t < 0 || t >= m->model->tokenizer().vocab_size()) return false;
  return m->model->tokenizer().IsEndOfGeneration(t);
}

int32_t vb_tokenize(const vb_model* m, const char* text, size_t len, bool add_special,
                    bool parse_special, vb_token* tokens, int32_t n_max) {
  if (m == nullptr || (text == nullptr && len > 0) || (tokens == nullptr && n_max > 0) || n_max < 0) {
    Null("model, text or tokens");
    return -1;
  }
  absl::StatusOr<std::vector<int32_t>> ids =
      m->model->tokenizer().Encode(std::string_view(text == nullptr ? "" : text, len), add_special,
                                   parse_special);
  if (!ids.ok()) {
    Fail(ids.status());
    return -1;
  }
  const size_t n = std::min(ids->size(), static_cast<size_t>(n_max));
  std::copy(ids->begin(), ids->begin() + n, tokens);
  return static_cast<int32_t>(ids->size());
}

int32_t vb_token_to_piece(const vb_model* m, vb_token token, char* buf, int32_t len) {
  if (m == nullptr || (buf == nullptr && len > 0) || len < 0) {
    Null("model or buf");
    return -1;
  }
  if (token < 0 || token >= m->model->tokenizer().vocab_size()) {
    Fail(absl::InvalidArgumentError(absl::StrCat("token ", token, " is outside the vocabulary")));
    return -1;
  }
  const std::string piece = m->model->tokenizer().TokenToPiece(token);
  std::memcpy(buf, piece.data(), std::min(piece.size(), static_cast<size_t>(len)));
  return static_cast<int32_t>(piece.size());
}

int32_t vb_chat_apply_template(const vb_model* m, const char* tmpl, const vb_chat_message* messages,
                               size_t n_messages, bool add_assistant, char* buf, int32_t len) {
  if (m == nullptr || (messages == nullptr && n_messages > 0) || (buf == nullptr && len > 0) || len < 0) {
    Null("model, messages or buf");
    return -1;
  }
  absl::StatusOr<vibrant::chat::ChatTemplate> t = TemplateFor(m, tmpl);
  if (!t.ok()) {
    Fail(t.status());
    return -1;
  }
  std::vector<vibrant::chat::Message> msgs;
  for (size_t i = 0; i < n_messages; ++i) {
    if (messages[i].role == nullptr || messages[i].content == nullptr) {
      Null(absl::StrCat("messages[", i, "].role or .content").c_str());
      return -1;
    }
    msgs.push_back({messages[i].role, messages[i].content});
  }
  absl::StatusOr<std::string> text = vibrant::chat::Render(*t, msgs, add_assistant);
  if (!text.ok()) {
    Fail(text.status());
    return -1;
  }
  std::string s = *std::move(text);
  if (m->model->tokenizer().add_bos()) s = vibrant::chat::StripLeadingBos(std::move(s), t->bos_token);
  if (s.size() > INT32_MAX - 1) {
    Fail(absl::OutOfRangeError("the rendered chat is larger than 2 GiB"));
    return -1;
  }
  const size_t n = std::min(s.size(), static_cast<size_t>(len));
  std::memcpy(buf, s.data(), n);
  if (s.size() < static_cast<size_t>(len)) buf[s.size()] = '\0';
  return static_cast<int32_t>(s.size());
}

vb_sampling_params vb_sampling_default_params(void) {
  const vibrant::SamplerParams d;
  vb_sampling_params p;
  p.temp = d.temp;
  p.top_k = d.top_k;
  p.top_p = d.top_p;
  p.min_p = d.min_p;
  p.seed = d.seed;
  p.repeat_last_n = d.repeat_last_n;
  p.repeat_penalty = d.repeat_penalty;
  p.frequency_penalty = d.frequency_penalty;
  p.presence_penalty = d.presence_penalty;
  return p;
}

vb_context_params vb_context_default_params(void) {
  vb_context_params p;
  p.n_threads = 0;
  p.sampling = vb_sampling_default_params();
  return p;
}

vb_status vb_context_create(vb_model* model, const vb_context_params* params, vb_context** out) {
  if (model == nullptr) return Null("model");
  if (out == nullptr) return Null("out");
  *out = nullptr;
  vb_context_params d = vb_context_default_params();
  if (params == nullptr) params = &d;
  if (params->n_threads < 0) return Fail(absl::InvalidArgumentError("n_threads is negative"));
  vibrant::SamplerParams sp;
  sp.temp = params->sampling.temp;
  sp.top_k = params->sampling.top_k;
  sp.top_p = params->sampling.top_p;
  sp.min_p = params->sampling.min_p;
  sp.seed = params->sampling.seed;
  sp.repeat_last_n = params->sampling.repeat_last_n == -1
                         ? static_cast<int32_t>(model->model->n_ctx())
                         : params->sampling.repeat_last_n;
  sp.repeat_penalty = params->sampling.repeat_penalty;
  sp.frequency_penalty = params->sampling.frequency_penalty;
  sp.presence_penalty = params->sampling.presence_penalty;
  absl::StatusOr<vibrant::Sampler> sampler = vibrant::Sampler::Create(sp);
  if (!sampler.ok()) return Fail(sampler.status());
  absl::StatusOr<std::unique_ptr<vibrant::Executor>> exec = model->model->CreateExecutor(params->n_threads);
  if (!exec.ok()) return Fail(exec.status());
  auto ctx = std::make_unique<vb_context>();
  ctx->model = model;
  ctx->exec = *std::move(exec);
  ctx->session = std::make_unique<vibrant::Session>(
      ctx->exec.get(), &model->model->tokenizer(), model->model->n_ctx(), model->model->max_tokens(),
      model->model->n_vocab(), *std::move(sampler));
  *out = ctx.release();
  return VB_OK;
}

void vb_context_free(vb_context* ctx) { delete ctx; }

void vb_context_reset(vb_context* ctx) {
  if (ctx != nullptr) ctx->session->Reset();
}

vb_generate_params vb_generate_default_params(void) {
  vb_generate_params p;
  p.n_predict = -1;
  p.ignore_eos = false;
  p.stop = nullptr;
  p.n_stop = 0;
  return p;
}

vb_status vb_generate(vb_context* ctx, const vb_token* tokens, int32_t n, const vb_generate_params* params,
                      vb_token_callback on_token, void* user_data, vb_generate_result* result) {
  if (ctx == nullptr) return Null("ctx");
  if (tokens == nullptr && n > 0) return Null("tokens");
  if (n < 0) return Fail(absl::InvalidArgumentError("n is negative"));
  absl::StatusOr<vibrant::GenerateResult> r = ctx->session->Generate(
      absl::Span<const int32_t>(tokens, static_cast<size_t>(n)), ToOptions(params),
      ToCallback(on_token, user_data));
  if (!r.ok()) return Fail(r.status());
  FillResult(*r, result);
  return VB_OK;
}

vb_status vb_chat_create(vb_context* ctx, const char* tmpl, vb_chat** out) {
  if (ctx == nullptr) return Null("ctx");
  if (out == nullptr) return Null("out");
  *out = nullptr;
  if (ctx->has_chat) {
    return Fail(absl::FailedPreconditionError(
        "this context already has a chat (free it first, or create another context)"));
  }
  absl::StatusOr<vibrant::chat::ChatTemplate> t = TemplateFor(ctx->model, tmpl);
  if (!t.ok()) return Fail(t.status());
  auto chat = std::make_unique<vb_chat>();
  chat->ctx = ctx;
  chat->conversation = std::make_unique<vibrant::Conversation>(
      ctx->session.get(), &ctx->model->model->tokenizer(), *std::move(t));
  ctx->has_chat = true;
  *out = chat.release();
  return VB_OK;
}

void vb_chat_free(vb_chat* chat) {
  if (chat == nullptr) return;
  chat->ctx->has_chat = false;
  delete chat;
}

vb_status vb_chat_add(vb_chat* chat, const char* role, const char* content) {
  if (chat == nullptr || role == nullptr || content == nullptr) return Null("chat, role or content");
  if (role[0] == '\0') return Fail(absl::InvalidArgumentError("empty role"));
  chat->conversation->Add({role, content});
  return VB_OK;
}

vb_status vb_chat_send(vb_chat* chat, const char* user_message, const vb_generate_params* params,
                       vb_token_callback on_token, void* user_data, vb_generate_result* result) {
  if (chat == nullptr || user_message == nullptr) return Null("chat or user_message");
  absl::StatusOr<vibrant::GenerateResult> r =
      chat->conversation->Send(user_message, ToOptions(params), ToCallback(on_token, user_data));
  if (!r.ok()) return Fail(r.status());
  FillResult(*r, result);
  return VB_OK;
}

vb_status vb_chat_set_context_shift(vb_chat* chat, int on) {
  if (chat == nullptr) return Null("chat");
  chat->conversation->set_context_shift(on != 0);
  return VB_OK;
}

}  // extern "C"
