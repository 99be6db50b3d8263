/* Vibrant: run GGUF language models from C or C++.
 *
 * A small C API in the style of llama.h: load a model (a GGUF, compiled on
 * first use into a plan cache, or a plan.bin), tokenize, apply the model's
 * chat template, generate with a token callback, free.
 *
 *   vb_model* model;
 *   vb_model_params mp = vb_model_default_params();
 *   if (vb_model_load("model.gguf", &mp, &model) != VB_OK) {
 *     fprintf(stderr, "%s\n", vb_last_error());
 *     return 1;
 *   }
 *   vb_context* ctx;
 *   vb_context_params cp = vb_context_default_params();
 *   vb_context_create(model, &cp, &ctx);
 *   vb_chat* chat;
 *   vb_chat_create(ctx, NULL, &chat);            // the model's chat template
 *   vb_generate_params gp = vb_generate_default_params();
 *   vb_chat_send(chat, "Hello!", &gp, print_token, NULL, NULL);
 *   vb_chat_free(chat);
 *   vb_context_free(ctx);
 *   vb_model_free(model);
 *
 * Errors: functions that can fail return a vb_status; the message of the last
 * failure on the calling thread is vb_last_error(). Nothing aborts on bad
 * input. Objects are not thread-safe: use one context per thread. Free chats
 * before their context, and contexts before their model.
 *
 * Link with the installed CMake package:
 *   find_package(Vibrant REQUIRED)
 *   target_link_libraries(app PRIVATE Vibrant::vibrant)
 */
#ifndef VIBRANT_VIBRANT_H_
#define VIBRANT_VIBRANT_H_

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__)
#define VB_API __attribute__((visibility("default")))
#else
#define VB_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

typedef int32_t vb_token;
typedef struct vb_model vb_model;
typedef struct vb_context vb_context;
typedef struct vb_chat vb_chat;

typedef enum vb_status {
  VB_OK = 0,
  VB_ERROR_INVALID_ARGUMENT = 1, /* a bad parameter, file or template */
  VB_ERROR_NOT_FOUND = 2,        /* a file that is not there */
  VB_ERROR_OUT_OF_RANGE = 3,     /* e.g. a prompt longer than the context */
  VB_ERROR_UNSUPPORTED = 4,      /* e.g. cuda in a build without CUDA */
  VB_ERROR_INTERNAL = 5,
} vb_status;

/* "0.1.0 (git <commit>, CUDA backend: ...)". */
VB_API const char* vb_version(void);
/* The message of the last failed call on this thread ("" if none). */
VB_API const char* vb_last_error(void);

/* ---- models ---- */

typedef void (*vb_log_callback)(void* user_data, const char* line);

typedef struct vb_model_params {
  const char* device;         /* "auto" (default), "cpu" or "cuda" */
  int32_t n_ctx;              /* KV cache length; 0: the plan's, or min(training, 4096) */
  int32_t max_tokens;         /* tokens per step; 0: the plan's, or 512 */
  bool use_plan_cache;        /* compile a GGUF once and reuse the plan (default true) */
  const char* plan_cache_dir; /* NULL: $VIBRANT_PLAN_CACHE, $XDG_CACHE_HOME/vibrant/plans, ~/.cache/... */
  vb_log_callback log;        /* decisions (device, plan cache); NULL: silent */
  void* log_user_data;
  int32_t n_gpu_layers;       /* llama.cpp's -ngl: -1 (default) the device decides; 0 the CPU;
                                 N < the layer count: the last N layers on the GPU, the rest
                                 on the CPU; more: the whole model on the GPU */
} vb_model_params;

VB_API vb_model_params vb_model_default_params(void);
/* Loads a GGUF or a plan.bin. On success *out owns the model. */
VB_API vb_status vb_model_load(const char* path, const vb_model_params* params, vb_model** out);
VB_API void vb_model_free(vb_model* model);

VB_API const char* vb_model_device(const vb_model* model); /* "cpu" or "cuda" */
VB_API int32_t vb_model_n_ctx(const vb_model* model);
VB_API int32_t vb_model_n_vocab(const vb_model* model);
VB_API vb_token vb_model_bos(const vb_model* model); /* -1 when none */
VB_API vb_token vb_model_eos(const vb_model* model); /* -1 when none */
VB_API bool vb_model_is_eog(const vb_model* model, vb_token token);

/* ---- tokens ---- */

/* Tokenizes text[0..len). add_special: BOS/EOS as the model's metadata says;
 * parse_special: "<|im_start|>" and the like become their tokens. Writes at
 * most n_max tokens and returns how many there are (call again with a larger
 * buffer when that is more than n_max), or -1 on error. */
VB_API int32_t vb_tokenize(const vb_model* model, const char* text, size_t len, bool add_special,
                           bool parse_special, vb_token* tokens, int32_t n_max);
/* The bytes a token stands for (not NUL-terminated). Writes at most len
 * bytes and returns how many there are, or -1 for an unknown token. */
VB_API int32_t vb_token_to_piece(const vb_model* model, vb_token token, char* buf, int32_t len);

/* ---- chat templates ---- */

typedef struct vb_chat_message {
  const char* role; /* "system", "user", "assistant" */
  const char* content;
} vb_chat_message;

/* Renders messages with a chat template: tmpl NULL means the model's
 * (tokenizer.chat_template; chatml when it has none), else a family name
 * ("chatml", "llama3", "gemma", ...) or a Jinja template's text. The text is
 * what to tokenize with add_special and parse_special (a BOS the tokenizer
 * adds itself is left out). Writes at most len bytes plus a NUL when it fits;
 * returns the text's length in bytes, or -1 on error (e.g. an unknown
 * template: vb_last_error() lists the known names). */
VB_API int32_t vb_chat_apply_template(const vb_model* model, const char* tmpl,
                                      const vb_chat_message* messages, size_t n_messages,
                                      bool add_assistant, char* buf, int32_t len);

/* ---- contexts: a KV cache, a sampler, the generation loop ---- */

typedef struct vb_sampling_params {
  float temp;              /* 0.8; <= 0: greedy */
  int32_t top_k;           /* 40; 0: off */
  float top_p;             /* 0.95; 1: off */
  float min_p;             /* 0.05; 0: off */
  uint32_t seed;           /* 0xFFFFFFFF: random */
  int32_t repeat_last_n;   /* 64; 0: off, -1: the context */
  float repeat_penalty;    /* 1.0: off */
  float frequency_penalty; /* 0: off */
  float presence_penalty;  /* 0: off */
} vb_sampling_params;

typedef struct vb_context_params {
  int32_t n_threads; /* CPU threads; 0: all cores */
  vb_sampling_params sampling;
} vb_context_params;

VB_API vb_sampling_params vb_sampling_default_params(void);
VB_API vb_context_params vb_context_default_params(void);
/* A context has its own KV cache; on CUDA also its own copy of the weights. */
VB_API vb_status vb_context_create(vb_model* model, const vb_context_params* params,
                                   vb_context** out);
VB_API void vb_context_free(vb_context* ctx);
/* Forgets the KV cache. */
VB_API void vb_context_reset(vb_context* ctx);

typedef struct vb_generate_params {
  int32_t n_predict;        /* tokens to generate; -1: until end of generation or a full context */
  bool ignore_eos;          /* end-of-generation tokens are banned and do not stop */
  const char* const* stop;  /* stop strings (not included in the text); may be NULL */
  size_t n_stop;
} vb_generate_params;

VB_API vb_generate_params vb_generate_default_params(void);

/* Called for every generated token with the text that can be shown now
 * (empty while the text might be the start of a stop string), and once more
 * with token -1 for text held back until the end. Return false to stop. */
typedef bool (*vb_token_callback)(void* user_data, vb_token token, const char* text, size_t len);

typedef struct vb_generate_result {
  int32_t n_prompt;    /* tokens of the request */
  int32_t n_reused;    /* of those, already in the KV cache */
  int32_t n_generated;
  double prefill_ms;
  double generate_ms;
  const char* stop_reason; /* "eog", "stop_string", "n_predict", "context_full", "interrupted" */
} vb_generate_result;

/* Generates a continuation of tokens[0..n): the WHOLE sequence (e.g. the
 * conversation so far); the longest prefix the KV cache already holds is not
 * computed again. result may be NULL. */
VB_API vb_status vb_generate(vb_context* ctx, const vb_token* tokens, int32_t n,
                             const vb_generate_params* params, vb_token_callback on_token,
                             void* user_data, vb_generate_result* result);

/* ---- chats: multi-turn conversations that reuse the KV cache ---- */

/* A conversation on ctx (one at a time per context) with a template as in
 * vb_chat_apply_template. */
VB_API vb_status vb_chat_create(vb_context* ctx, const char* tmpl, vb_chat** out);
VB_API void vb_chat_free(vb_chat* chat);
/* Adds a message without generating (e.g. the system prompt). */
VB_API vb_status vb_chat_add(vb_chat* chat, const char* role, const char* content);
/* Adds the user's message and generates the reply, which joins the
 * conversation; each turn prefills only the tokens the cache lacks. When the
 * conversation and room for the reply outgrow the context, its oldest turns
 * are dropped first (system messages stay), unless context shifting is off. */
VB_API vb_status vb_chat_send(vb_chat* chat, const char* user_message,
                              const vb_generate_params* params, vb_token_callback on_token,
                              void* user_data, vb_generate_result* result);
/* Context shifting on (non-zero, the default) or off (0: a conversation that
 * outgrows the context fails vb_chat_send, as llama.cpp's
 * --no-context-shift). */
VB_API vb_status vb_chat_set_context_shift(vb_chat* chat, int on);

#ifdef __cplusplus
}
#endif

#endif /* VIBRANT_VIBRANT_H_ */
