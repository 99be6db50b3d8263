#include "tools/vibrant-server/server.h"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "httplib.h"
#include "tools/vibrant-server/channel.h"
#include "tools/vibrant-server/openai.h"

namespace vibrant::server {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

std::string FinishReason(const BatchEvent& done) {
  switch (done.stop) {
    case StopReason::kEndOfGeneration:
    case StopReason::kStopString:
      return "stop";
    case StopReason::kNPredict:
    case StopReason::kContextFull:
      return "length";
    case StopReason::kInterrupted:
      return "stop";
  }
  return "stop";
}

ApiError StatusToError(const absl::Status& s) {
  ApiError e;
  e.message = std::string(s.message());
  switch (s.code()) {
    case absl::StatusCode::kResourceExhausted:
      e.http = 503;
      e.type = "server_error";
      e.code = "overloaded";
      break;
    case absl::StatusCode::kUnavailable:
      e.http = 503;
      e.type = "server_error";
      e.code = "shutting_down";
      break;
    case absl::StatusCode::kDeadlineExceeded:
      e.http = 408;
      e.type = "timeout_error";
      e.code = "timeout";
      break;
    case absl::StatusCode::kOutOfRange:
      e.http = 400;
      e.code = "context_length_exceeded";
      break;
    case absl::StatusCode::kInvalidArgument:
      e.http = 400;
      break;
    default:
      e.http = 500;
      e.type = "server_error";
  }
  return e;
}

void SendError(httplib::Response& res, const ApiError& e) {
  res.status = e.http;
  res.set_content(Dump(ErrorJson(e)), "application/json");
}

json BytesOf(const std::string& s) {
  json b = json::array();
  for (unsigned char c : s) b.push_back(static_cast<int>(c));
  return b;
}

int64_t UnixNow() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Resident memory in bytes (Linux /proc/self/statm).
int64_t ResidentBytes() {
  std::ifstream in("/proc/self/statm");
  int64_t pages = 0, resident = 0;
  if (!(in >> pages >> resident)) return -1;
  return resident * static_cast<int64_t>(sysconf(_SC_PAGESIZE));
}

}  // namespace

struct HttpServer::Metrics {
  std::mutex mu;
  std::map<std::pair<std::string, int>, int64_t> http;  // (path, status) -> count
  double ttft_sum = 0;
  int64_t ttft_count = 0;
  double request_seconds_sum = 0;
  int64_t request_count = 0;
};

HttpServer::HttpServer(const Tokenizer* tokenizer, BatchEngine* engine, ServerOptions opts)
    : tok_(tokenizer),
      engine_(engine),
      opts_(std::move(opts)),
      svr_(std::make_unique<httplib::Server>()),
      metrics_(std::make_unique<Metrics>()) {
  const BatchEngine::Shape& sh = engine_->shape();
  int threads = opts_.http_threads;
  if (threads <= 0) threads = static_cast<int>(sh.n_seq) + 72;
  svr_->new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  svr_->set_payload_max_length(opts_.max_body_bytes);
  svr_->set_read_timeout(30, 0);
  svr_->set_write_timeout(30, 0);
  svr_->set_keep_alive_timeout(5);
  Routes();
}

HttpServer::~HttpServer() = default;

absl::Status HttpServer::Bind() {
  if (opts_.port == 0) {
    port_ = svr_->bind_to_any_port(opts_.host);
    if (port_ <= 0) {
      return absl::UnavailableError(absl::StrCat("cannot bind ", opts_.host, " to a free port"));
    }
  } else {
    if (!svr_->bind_to_port(opts_.host, opts_.port)) {
      return absl::UnavailableError(absl::StrCat("cannot bind ", opts_.host, ":", opts_.port,
                                                 " (in use, or not an address of this machine)"));
    }
    port_ = opts_.port;
  }
  return absl::OkStatus();
}

absl::Status HttpServer::Serve() {
  if (!svr_->listen_after_bind() && !shutting_down_) {
    return absl::InternalError("the HTTP server stopped unexpectedly");
  }
  return absl::OkStatus();
}

void HttpServer::Stop(double drain_seconds) {
  shutting_down_ = true;
  {
    std::unique_lock<std::mutex> lock(streams_mu_);
    streams_cv_.wait_for(lock, std::chrono::duration<double>(drain_seconds),
                         [&] { return streams_ == 0; });
  }
  svr_->stop();
}

void HttpServer::Routes() {
  httplib::Server& s = *svr_;

  // Errors httplib produces itself (404, 413, 400 on a bad request line)
  // get an OpenAI error object too.
  s.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    ApiError e;
    e.http = res.status;
    if (res.status == 404) {
      e.message = absl::StrCat("no route for ", req.method, " ", SanitizeUtf8(req.path));
      e.code = "not_found";
    } else if (res.status == 413) {
      e.message = "the request body is too large (--max-body)";
      e.code = "payload_too_large";
    } else {
      e.message = absl::StrCat("HTTP ", res.status);
    }
    res.set_content(Dump(ErrorJson(e)), "application/json");
  });
  s.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr) {
    ApiError e;
    e.http = 500;
    e.type = "server_error";
    e.message = "internal error";
    SendError(res, e);
  });
  s.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
    std::string path = req.path;
    if (path != "/v1/chat/completions" && path != "/v1/completions" && path != "/v1/models" &&
        path != "/models" && path != "/health" && path != "/metrics" && path != "/") {
      path = "other";
    }
    {
      std::lock_guard<std::mutex> lock(metrics_->mu);
      ++metrics_->http[{path, res.status}];
    }
    if (opts_.log) {
      opts_.log(absl::StrCat(req.remote_addr, " ", req.method, " ", SanitizeUtf8(req.path), " ",
                             res.status));
    }
  });
  // Authentication for /v1/*.
  s.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    if (opts_.api_key.empty() || req.path.rfind("/v1/", 0) != 0) {
      return httplib::Server::HandlerResponse::Unhandled;
    }
    const std::string auth = req.get_header_value("Authorization");
    if (auth == "Bearer " + opts_.api_key) return httplib::Server::HandlerResponse::Unhandled;
    ApiError e;
    e.http = 401;
    e.code = "invalid_api_key";
    e.message = auth.empty() ? "an API key is required: Authorization: Bearer <key>"
                             : "the API key is not valid";
    SendError(res, e);
    return httplib::Server::HandlerResponse::Handled;
  });

  s.Get("/", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(kChatPageHtml, "text/html; charset=utf-8");
  });
  s.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    if (shutting_down_) {
      res.status = 503;
      res.set_content(R"({"status":"shutting down"})", "application/json");
      return;
    }
    res.set_content(R"({"status":"ok"})", "application/json");
  });
  auto models = [this](const httplib::Request&, httplib::Response& res) {
    const BatchEngine::Shape& sh = engine_->shape();
    json m = {{"id", opts_.model_id},
              {"object", "model"},
              {"created", UnixNow()},
              {"owned_by", "vibrant"},
              {"meta",
               {{"n_vocab", sh.n_vocab},
                {"n_ctx_per_sequence", engine_->context_per_sequence()},
                {"n_ctx_total", sh.n_blocks * sh.block_size},
                {"parallel", sh.n_seq}}}};
    res.set_content(Dump(json{{"object", "list"}, {"data", json::array({m})}}), "application/json");
  };
  s.Get("/v1/models", models);
  s.Get("/models", models);
  s.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(MetricsText(), "text/plain; version=0.0.4");
  });

  auto generate = [this](bool chat) {
    // A content-reader handler: the body is read here with --max-body as its
    // only limit (httplib's own read caps form-encoded bodies, which is what
    // `curl -d` sends, at 8 KiB).
    return [this, chat](const httplib::Request& req, httplib::Response& res,
                        const httplib::ContentReader& reader) {
      (void)req;
      std::string body;
      if (!reader([&](const char* data, size_t n) {
            body.append(data, n);
            return body.size() <= opts_.max_body_bytes;
          }) ||
          body.size() > opts_.max_body_bytes) {
        ApiError e;
        e.http = 413;
        e.code = "payload_too_large";
        e.message = "the request body is too large (--max-body)";
        return SendError(res, e);
      }
      const Clock::time_point arrived = Clock::now();
      const Clock::time_point deadline =
          arrived + std::chrono::duration_cast<Clock::duration>(
                        std::chrono::duration<double>(opts_.timeout_seconds));
      ParseLimits limits;
      limits.n_vocab = engine_->shape().n_vocab;
      std::variant<ApiRequest, ApiError> parsed = ParseRequest(body, chat, limits);
      if (auto* e = std::get_if<ApiError>(&parsed)) return SendError(res, *e);
      ApiRequest r = std::get<ApiRequest>(std::move(parsed));

      // The prompt's tokens.
      std::vector<int32_t> prompt;
      if (chat) {
        absl::StatusOr<std::string> text = chat::Render(opts_.chat_template, r.messages, true);
        if (!text.ok()) return SendError(res, StatusToError(text.status()));
        std::string t = *std::move(text);
        if (tok_->add_bos()) t = chat::StripLeadingBos(std::move(t), opts_.chat_template.bos_token);
        absl::StatusOr<std::vector<int32_t>> ids = tok_->Encode(t, true, true);
        if (!ids.ok()) return SendError(res, StatusToError(ids.status()));
        prompt = *std::move(ids);
      } else if (r.prompt_is_tokens) {
        prompt = r.prompt_tokens;
      } else {
        absl::StatusOr<std::vector<int32_t>> ids = tok_->Encode(r.prompt, true, true);
        if (!ids.ok()) {
          ApiError e = StatusToError(ids.status());
          e.param = "prompt";
          return SendError(res, e);
        }
        prompt = *std::move(ids);
      }
      const int64_t ctx = engine_->context_per_sequence();
      const int64_t n_prompt = static_cast<int64_t>(prompt.size());
      if (n_prompt == 0) {
        ApiError e;
        e.param = chat ? "messages" : "prompt";
        e.message = "the prompt is empty (and the model adds no BOS token)";
        return SendError(res, e);
      }
      if (n_prompt >= ctx || (r.max_tokens > 0 && n_prompt + r.max_tokens > ctx)) {
        ApiError e;
        e.code = "context_length_exceeded";
        e.param = chat ? "messages" : "prompt";
        e.message = absl::StrCat(
            "This model's maximum context length is ", ctx, " tokens. However, you requested ",
            n_prompt + std::max<int64_t>(r.max_tokens, 0), " tokens (", n_prompt, " in the ",
            chat ? "messages" : "prompt", ", ", std::max<int64_t>(r.max_tokens, 0),
            " in the completion). Please reduce the length of the ",
            chat ? "messages" : "prompt", " or completion.");
        return SendError(res, e);
      }

      auto channel = std::make_shared<Channel>();
      BatchRequest br;
      br.prompt = prompt;
      br.sampling = r.sampling;
      br.n_predict = r.max_tokens;
      br.ignore_eos = r.ignore_eos;
      for (const std::string& st : r.stop) br.stops.push_back({st, false});
      br.top_logprobs = r.top_logprobs;
      br.deadline = deadline;
      br.on_event = Channel::Callback(channel);
      absl::StatusOr<uint64_t> id = engine_->Submit(std::move(br));
      if (!id.ok()) return SendError(res, StatusToError(id.status()));

      const std::string rid = absl::StrCat(chat ? "chatcmpl-" : "cmpl-", absl::StrFormat("%x", next_id_++),
                                           absl::StrFormat("%08x", static_cast<uint32_t>(*id * 2654435761u)));
      const int64_t created = UnixNow();
      const std::string model = opts_.model_id;
      const bool want_logprobs = r.top_logprobs >= 0;
      const int top_n = r.top_logprobs;

      // Logprobs of one token event in either endpoint's layout.
      auto chat_logprob = [this, top_n](const BatchEvent& e) {
        json top = json::array();
        for (int i = 0; i < static_cast<int>(e.top.size()) && i < top_n; ++i) {
          const std::string p = tok_->TokenToPiece(e.top[i].token);
          top.push_back({{"token", SanitizeUtf8(p)}, {"logprob", e.top[i].logprob}, {"bytes", BytesOf(p)}});
        }
        return json{{"token", SanitizeUtf8(e.piece)},
                    {"logprob", e.logprob},
                    {"bytes", BytesOf(e.piece)},
                    {"top_logprobs", top}};
      };
      auto usage = [](int64_t p, int64_t c) {
        return json{{"prompt_tokens", p}, {"completion_tokens", c}, {"total_tokens", p + c}};
      };
      auto record = [this, arrived](const BatchEvent& done) {
        std::lock_guard<std::mutex> lock(metrics_->mu);
        if (done.n_generated > 0) {
          metrics_->ttft_sum += done.queue_seconds + done.prefill_seconds;
          ++metrics_->ttft_count;
        }
        metrics_->request_seconds_sum +=
            std::chrono::duration<double>(Clock::now() - arrived).count();
        ++metrics_->request_count;
      };

      if (!r.stream) {
        // Wait for the whole completion.
        std::string text, pending;
        json lp_content = json::array();
        json c_tokens = json::array(), c_lps = json::array(), c_top = json::array(),
             c_offsets = json::array();
        BatchEvent e;
        while (true) {
          if (!channel->Next(&e, deadline + std::chrono::seconds(30))) {
            // The engine ends every request by its deadline; this is a safety net.
            engine_->Cancel(*id);
            channel->Close();
            return SendError(res, StatusToError(absl::DeadlineExceededError("the request timed out")));
          }
          if (e.kind == BatchEvent::Kind::kToken && want_logprobs) {
            if (chat) {
              lp_content.push_back(chat_logprob(e));
            } else {
              c_offsets.push_back(text.size() + pending.size());
              c_tokens.push_back(SanitizeUtf8(e.piece));
              c_lps.push_back(e.logprob);
              json t = json::object();
              for (int i = 0; i < static_cast<int>(e.top.size()) && i < top_n; ++i) {
                t[SanitizeUtf8(tok_->TokenToPiece(e.top[i].token))] = e.top[i].logprob;
              }
              c_top.push_back(t);
            }
          }
          pending += e.text;
          if (e.kind == BatchEvent::Kind::kDone) break;
        }
        text += pending;
        record(e);
        if (!e.status.ok()) return SendError(res, StatusToError(e.status));
        json choice;
        if (chat) {
          choice = {{"index", 0},
                    {"message", {{"role", "assistant"}, {"content", SanitizeUtf8(text)}}},
                    {"logprobs", want_logprobs ? json{{"content", lp_content}} : json(nullptr)},
                    {"finish_reason", FinishReason(e)}};
        } else {
          choice = {{"index", 0},
                    {"text", SanitizeUtf8(text)},
                    {"logprobs", want_logprobs ? json{{"tokens", c_tokens},
                                                      {"token_logprobs", c_lps},
                                                      {"top_logprobs", c_top},
                                                      {"text_offset", c_offsets}}
                                               : json(nullptr)},
                    {"finish_reason", FinishReason(e)}};
        }
        json out = {{"id", rid},
                    {"object", chat ? "chat.completion" : "text_completion"},
                    {"created", created},
                    {"model", model},
                    {"choices", json::array({choice})},
                    {"usage", usage(e.n_prompt, e.n_generated)},
                    {"system_fingerprint", "vibrant"}};
        res.set_content(Dump(out), "application/json");
        return;
      }

      // Streaming: server-sent events, one chunk per released piece of text.
      struct StreamState {
        bool started = false;
        bool finished = false;
        std::string pending;  // bytes held until they end a UTF-8 character
      };
      auto st = std::make_shared<StreamState>();
      BatchEngine* engine = engine_;
      const uint64_t seq_id = *id;
      const bool include_usage = r.include_usage;
      res.set_header("Cache-Control", "no-cache");
      res.set_header("X-Accel-Buffering", "no");
      {
        std::lock_guard<std::mutex> lock(streams_mu_);
        ++streams_;
      }
      res.set_chunked_content_provider(
          "text/event-stream",
          [=](size_t, httplib::DataSink& sink) mutable {
            auto send = [&](const json& j) {
              const std::string line = absl::StrCat("data: ", Dump(j), "\n\n");
              return sink.write(line.data(), line.size());
            };
            auto chunk = [&](json delta_or_text, json logprobs, json finish) {
              json choice;
              if (chat) {
                choice = {{"index", 0}, {"delta", delta_or_text}, {"logprobs", logprobs},
                          {"finish_reason", finish}};
              } else {
                choice = {{"index", 0}, {"text", delta_or_text}, {"logprobs", logprobs},
                          {"finish_reason", finish}};
              }
              json j = {{"id", rid},
                        {"object", chat ? "chat.completion.chunk" : "text_completion"},
                        {"created", created},
                        {"model", model},
                        {"system_fingerprint", "vibrant"},
                        {"choices", json::array({choice})}};
              if (include_usage) j["usage"] = nullptr;
              return send(j);
            };
            auto gone = [&] {
              channel->Close();
              engine->Cancel(seq_id);
              return false;
            };
            if (!st->started) {
              st->started = true;
              if (chat && !chunk(json{{"role", "assistant"}, {"content", ""}}, nullptr, nullptr)) {
                return gone();
              }
            }
            BatchEvent e;
            // Wait for the next event; a comment line now and then notices
            // a client that went away while nothing is generated (a long
            // prefill, a queue).
            while (!channel->Next(&e, Clock::now() + std::chrono::seconds(2))) {
              static const char kPing[] = ": ping\n\n";
              if (!sink.write(kPing, sizeof(kPing) - 1)) return gone();
              if (Clock::now() > deadline + std::chrono::seconds(30)) return gone();
            }
            st->pending += e.text;
            const size_t cut = e.kind == BatchEvent::Kind::kDone ? st->pending.size()
                                                                 : Utf8Complete(st->pending);
            const std::string text = st->pending.substr(0, cut);
            st->pending.erase(0, cut);
            if (e.kind == BatchEvent::Kind::kToken) {
              json lp = nullptr;
              if (want_logprobs) {
                if (chat) {
                  lp = json{{"content", json::array({chat_logprob(e)})}};
                } else {
                  json t = json::object();
                  for (int i = 0; i < static_cast<int>(e.top.size()) && i < top_n; ++i) {
                    t[SanitizeUtf8(tok_->TokenToPiece(e.top[i].token))] = e.top[i].logprob;
                  }
                  lp = json{{"tokens", {SanitizeUtf8(e.piece)}},
                            {"token_logprobs", {e.logprob}},
                            {"top_logprobs", json::array({t})},
                            {"text_offset", json::array()}};
                }
              }
              if (text.empty() && !want_logprobs) return true;
              const bool ok = chat ? chunk(json{{"content", SanitizeUtf8(text)}}, lp, nullptr)
                                   : chunk(SanitizeUtf8(text), lp, nullptr);
              return ok ? true : gone();
            }
            // Done.
            st->finished = true;
            record(e);
            bool ok = true;
            if (!e.status.ok()) {
              ok = send(ErrorJson(StatusToError(e.status)));
            } else {
              if (!text.empty()) {
                ok = chat ? chunk(json{{"content", SanitizeUtf8(text)}}, nullptr, nullptr)
                          : chunk(SanitizeUtf8(text), nullptr, nullptr);
              }
              ok = ok && (chat ? chunk(json::object(), nullptr, FinishReason(e))
                               : chunk("", nullptr, FinishReason(e)));
              if (ok && include_usage) {
                json j = {{"id", rid},
                          {"object", chat ? "chat.completion.chunk" : "text_completion"},
                          {"created", created},
                          {"model", model},
                          {"system_fingerprint", "vibrant"},
                          {"choices", json::array()},
                          {"usage", usage(e.n_prompt, e.n_generated)}};
                ok = send(j);
              }
            }
            static const char kDoneLine[] = "data: [DONE]\n\n";
            if (ok) ok = sink.write(kDoneLine, sizeof(kDoneLine) - 1);
            sink.done();
            return ok;
          },
          [=, this](bool success) {
            // The response ended: a client that left early cancels its sequence.
            if (!success || !st->finished) {
              channel->Close();
              engine->Cancel(seq_id);
            }
            std::lock_guard<std::mutex> lock(streams_mu_);
            --streams_;
            streams_cv_.notify_all();
          });
    };
  };
  s.Post("/v1/chat/completions", generate(true));
  s.Post("/v1/completions", generate(false));
  s.Post("/chat/completions", generate(true));
  s.Post("/completions", generate(false));
}

std::string HttpServer::MetricsText() const {
  const BatchStats b = engine_->Stats();
  std::string out;
  auto metric = [&](const char* name, const char* type, const char* help, auto value) {
    absl::StrAppend(&out, "# HELP ", name, " ", help, "\n# TYPE ", name, " ", type, "\n", name, " ",
                    value, "\n");
  };
  metric("vibrant_requests_submitted_total", "counter", "Generation requests accepted by the scheduler.",
         b.requests_submitted);
  metric("vibrant_requests_finished_total", "counter", "Generation requests ended, for any reason.",
         b.requests_finished);
  metric("vibrant_requests_cancelled_total", "counter",
         "Requests ended early: client gone, timeout or shutdown.", b.requests_cancelled);
  metric("vibrant_requests_rejected_total", "counter", "Requests refused (bad input or a full queue).",
         b.requests_rejected);
  metric("vibrant_requests_preempted_total", "counter",
         "Sequences preempted for KV blocks and recomputed later.", b.requests_preempted);
  metric("vibrant_requests_running", "gauge", "Sequences holding a batch slot.", b.running);
  metric("vibrant_requests_queued", "gauge", "Requests waiting for a slot or KV blocks (queue length).",
         b.queued);
  metric("vibrant_prompt_tokens_total", "counter", "Prompt tokens of finished requests.", b.prompt_tokens);
  metric("vibrant_generation_tokens_total", "counter", "Tokens generated.", b.generated_tokens);
  metric("vibrant_prefill_tokens_total", "counter", "Tokens prefilled (recomputation included).",
         b.prefill_tokens);
  absl::StrAppend(&out,
                  "# HELP vibrant_step_seconds Time of one batched model step.\n"
                  "# TYPE vibrant_step_seconds summary\n",
                  "vibrant_step_seconds_sum ", absl::StrFormat("%.6f", b.step_seconds_sum), "\n",
                  "vibrant_step_seconds_count ", b.steps, "\n");
  metric("vibrant_last_step_seconds", "gauge", "Time of the last step.",
         absl::StrFormat("%.6f", b.last_step_seconds));
  metric("vibrant_last_step_tokens", "gauge", "Tokens in the last step.", b.last_step_tokens);
  metric("vibrant_kv_blocks_total", "gauge", "KV cache blocks (--ctx-size / block size).",
         b.kv_blocks_total);
  metric("vibrant_kv_blocks_used", "gauge", "KV cache blocks held by sequences.", b.kv_blocks_used);
  metric("vibrant_kv_block_size", "gauge", "Tokens per KV block.", b.block_size);
  metric("vibrant_parallel", "gauge", "Sequences per step (--parallel).", b.n_seq);
  {
    std::lock_guard<std::mutex> lock(metrics_->mu);
    absl::StrAppend(&out,
                    "# HELP vibrant_time_to_first_token_seconds Arrival to first token.\n"
                    "# TYPE vibrant_time_to_first_token_seconds summary\n",
                    "vibrant_time_to_first_token_seconds_sum ",
                    absl::StrFormat("%.6f", metrics_->ttft_sum), "\n",
                    "vibrant_time_to_first_token_seconds_count ", metrics_->ttft_count, "\n");
    absl::StrAppend(&out,
                    "# HELP vibrant_request_seconds Arrival to the end of the reply.\n"
                    "# TYPE vibrant_request_seconds summary\n",
                    "vibrant_request_seconds_sum ",
                    absl::StrFormat("%.6f", metrics_->request_seconds_sum), "\n",
                    "vibrant_request_seconds_count ", metrics_->request_count, "\n");
    absl::StrAppend(&out,
                    "# HELP vibrant_http_requests_total HTTP requests by path and status.\n"
                    "# TYPE vibrant_http_requests_total counter\n");
    for (const auto& [key, n] : metrics_->http) {
      absl::StrAppend(&out, "vibrant_http_requests_total{path=\"", key.first, "\",code=\"",
                      key.second, "\"} ", n, "\n");
    }
  }
  metric("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", ResidentBytes());
  return out;
}

}  // namespace vibrant::server
