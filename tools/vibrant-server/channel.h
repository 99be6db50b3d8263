// The events of one request, from the batch engine's thread to the HTTP
// thread that answers it (server.cc).
#ifndef VIBRANT_TOOLS_VIBRANT_SERVER_CHANNEL_H_
#define VIBRANT_TOOLS_VIBRANT_SERVER_CHANNEL_H_

#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <utility>

#include "runtime/batch.h"

namespace vibrant::server {

// The events of one request, from the engine's thread to the HTTP thread.
struct Channel {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<BatchEvent> events;
  bool consumer_gone = false;

  // The engine's callback owns a reference to the channel: the engine calls
  // it until the sequence's kDone, which may come after the HTTP side has let
  // go of its own reference (a client that disconnected, a timeout: Cancel
  // takes effect at the engine's next step, and kDone is always sent). A
  // callback holding only `this` wrote into a freed channel then (glibc
  // "unaligned tcache chunk detected" under the load test).
  static BatchCallback Callback(std::shared_ptr<Channel> ch) {
    return [ch = std::move(ch)](const BatchEvent& e) {
      std::lock_guard<std::mutex> lock(ch->mu);
      if (ch->consumer_gone) return false;
      ch->events.push_back(e);
      ch->cv.notify_all();
      return true;
    };
  }
  // Waits for the next event until `until`; false on timeout.
  bool Next(BatchEvent* out, std::chrono::steady_clock::time_point until) {
    std::unique_lock<std::mutex> lock(mu);
    if (!cv.wait_until(lock, until, [&] { return !events.empty(); })) return false;
    *out = std::move(events.front());
    events.pop_front();
    return true;
  }
  void Close() {
    std::lock_guard<std::mutex> lock(mu);
    consumer_gone = true;
  }
};

}  // namespace vibrant::server

#endif  // VIBRANT_TOOLS_VIBRANT_SERVER_CHANNEL_H_
