/* vibrant-example MODEL PROMPT [N] [--chat]
 *
 * A plain C program on the public API (vibrant/vibrant.h): loads a GGUF or a
 * plan, then either continues PROMPT greedily for N tokens (default 32), or,
 * with --chat, sends PROMPT as a chat message with the model's template and
 * a second message after it. Text goes to stdout, a summary to stderr. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vibrant/vibrant.h>

static bool print_text(void* user_data, vb_token token, const char* text, size_t len) {
  (void)user_data;
  (void)token;
  fwrite(text, 1, len, stdout);
  fflush(stdout);
  return true;
}

static int fail(const char* what) {
  fprintf(stderr, "vibrant-example: %s: %s\n", what, vb_last_error());
  return 1;
}

int main(int argc, char** argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: vibrant-example MODEL PROMPT [N] [--chat]\n");
    return 2;
  }
  const char* path = argv[1];
  const char* prompt = argv[2];
  int n_predict = argc > 3 && strcmp(argv[3], "--chat") != 0 ? atoi(argv[3]) : 32;
  bool chat = strcmp(argv[argc - 1], "--chat") == 0;
  fprintf(stderr, "vibrant %s\n", vb_version());

  vb_model_params mp = vb_model_default_params();
  mp.device = "cpu";
  vb_model* model = NULL;
  if (vb_model_load(path, &mp, &model) != VB_OK) return fail("load");

  vb_context_params cp = vb_context_default_params();
  cp.sampling.temp = 0.0f; /* greedy: reproducible */
  vb_context* ctx = NULL;
  if (vb_context_create(model, &cp, &ctx) != VB_OK) return fail("context");

  vb_generate_params gp = vb_generate_default_params();
  gp.n_predict = n_predict;
  vb_generate_result res;
  if (chat) {
    vb_chat* c = NULL;
    if (vb_chat_create(ctx, NULL, &c) != VB_OK) return fail("chat");
    if (vb_chat_send(c, prompt, &gp, print_text, NULL, &res) != VB_OK) return fail("chat turn 1");
    printf("\n");
    if (vb_chat_send(c, "And then?", &gp, print_text, NULL, &res) != VB_OK) return fail("chat turn 2");
    printf("\n");
    vb_chat_free(c);
  } else {
    /* Ask for the size first, then tokenize into a buffer of that size. */
    int32_t n = vb_tokenize(model, prompt, strlen(prompt), true, true, NULL, 0);
    if (n < 0) return fail("tokenize");
    vb_token* tokens = malloc(sizeof(vb_token) * (size_t)(n > 0 ? n : 1));
    vb_tokenize(model, prompt, strlen(prompt), true, true, tokens, n);
    if (vb_generate(ctx, tokens, n, &gp, print_text, NULL, &res) != VB_OK) return fail("generate");
    free(tokens);
  }
  fprintf(stderr, "\n%d prompt tokens (%d reused), %d generated, stop: %s\n", res.n_prompt, res.n_reused,
          res.n_generated, res.stop_reason);
  vb_context_free(ctx);
  vb_model_free(model);
  return 0;
}
