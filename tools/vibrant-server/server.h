// vibrant-server's HTTP side: the OpenAI endpoints over a BatchEngine
// (runtime/batch.h), the metrics, the chat page. One instance per process.
//
//   POST /v1/chat/completions   the model's chat template, then generation
//   POST /v1/completions        a text prompt (or token ids) continued
//   GET  /v1/models, /models    the one model
//   GET  /health                {"status": "ok"} (503 while shutting down)
//   GET  /metrics               Prometheus text
//   GET  /                      the chat page (chat.html)
//
// Streams are server-sent events ("data: {chunk}\n\n" ... "data: [DONE]\n\n")
// as OpenAI sends them. A client that goes away mid-stream is noticed at the
// next write: its sequence is cancelled and its KV blocks freed. Every
// request has a deadline (--timeout). With --api-key, /v1/* need
// "Authorization: Bearer KEY" (401 otherwise).
#ifndef VIBRANT_TOOLS_VIBRANT_SERVER_SERVER_H_
#define VIBRANT_TOOLS_VIBRANT_SERVER_SERVER_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "absl/status/status.h"
#include "frontends/chat/chat_template.h"
#include "frontends/tokenizer/tokenizer.h"
#include "runtime/batch.h"

namespace httplib {
class Server;
}

namespace vibrant::server {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;               // 0: any free port (see HttpServer::port)
  std::string api_key;           // "": no authentication
  std::string model_id;          // the model's name in /v1/models and replies
  double timeout_seconds = 600;  // per request, from its arrival
  size_t max_body_bytes = 1 << 20;
  int http_threads = 0;          // 0: parallel + queue + 8
  chat::ChatTemplate chat_template;
  std::function<void(const std::string&)> log;  // one line per request / event
};

class HttpServer {
 public:
  HttpServer(const Tokenizer* tokenizer, BatchEngine* engine, ServerOptions opts);
  ~HttpServer();

  // Binds host:port (an error naming them when it cannot).
  absl::Status Bind();
  int port() const { return port_; }
  // Serves until Stop(); returns when every connection has ended.
  absl::Status Serve();
  // Stops accepting; in-flight requests end (the caller shuts the engine
  // down first so that streams finish). Streams in flight get up to
  // `drain_seconds` to write their last events first: httplib stops calling
  // a stream's content provider once it is stopped, which would cut a
  // stream before the error event that tells its client the server is
  // shutting down.
  void Stop(double drain_seconds = 10);
  void set_shutting_down() { shutting_down_ = true; }

 private:
  struct Metrics;
  void Routes();
  std::string MetricsText() const;

  const Tokenizer* tok_;
  BatchEngine* engine_;
  ServerOptions opts_;
  std::unique_ptr<httplib::Server> svr_;
  std::unique_ptr<Metrics> metrics_;
  int port_ = -1;
  std::atomic<bool> shutting_down_{false};
  std::atomic<uint64_t> next_id_{1};
  // Streaming responses not yet ended (their resource releaser not run).
  std::mutex streams_mu_;
  std::condition_variable streams_cv_;
  int64_t streams_ = 0;
};

// The chat page's HTML (chat.html, embedded at build time).
extern const char kChatPageHtml[];

}  // namespace vibrant::server

#endif  // VIBRANT_TOOLS_VIBRANT_SERVER_SERVER_H_
