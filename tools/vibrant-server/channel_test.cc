#include "tools/vibrant-server/channel.h"

#include <atomic>
#include <chrono>
#include <memory>
#include <thread>

#include "gtest/gtest.h"

namespace vibrant::server {
namespace {

BatchEvent Token(int32_t id) {
  BatchEvent e;
  e.kind = BatchEvent::Kind::kToken;
  e.token = id;
  return e;
}

// The HTTP side may let go of its channel before the engine's last call (a
// client that disconnected: the handler's state is destroyed, and Cancel only
// takes effect at the engine's next step, which still sends kDone). The
// engine's callback must keep the channel alive until the engine drops it;
// before the fix it held a bare `this`, and the load test crashed in glibc
// ("unaligned tcache chunk detected") after writes into freed channels
// (valgrind: invalid reads/writes under Channel::Callback from
// BatchEngine::Sample/Finish, the block freed by httplib's content provider).
TEST(ChannelTest, TheEngineCallbackOwnsTheChannel) {
  auto ch = std::make_shared<Channel>();
  std::weak_ptr<Channel> weak = ch;
  BatchCallback cb = Channel::Callback(ch);
  ch.reset();  // the HTTP handler is gone
  ASSERT_FALSE(weak.expired());
  EXPECT_TRUE(cb(Token(7)));
  {
    std::shared_ptr<Channel> alive = weak.lock();
    ASSERT_NE(alive, nullptr);
    BatchEvent e;
    ASSERT_TRUE(alive->Next(&e, std::chrono::steady_clock::now()));
    EXPECT_EQ(e.token, 7);
    alive->Close();
  }
  EXPECT_FALSE(cb(Token(8)));  // closed: the engine cancels the sequence
  BatchEvent done;
  done.kind = BatchEvent::Kind::kDone;
  EXPECT_FALSE(cb(done));
  cb = nullptr;  // the engine frees the finished sequence
  EXPECT_TRUE(weak.expired());
}

// The race itself: an "engine" thread keeps calling while the "HTTP" thread
// closes and drops its reference. Meaningful under ASan/valgrind (a
// use-after-free there); without them it checks the calls stop succeeding.
TEST(ChannelTest, ConsumerLeavesWhileTheEngineCalls) {
  for (int round = 0; round < 50; ++round) {
    auto ch = std::make_shared<Channel>();
    BatchCallback cb = Channel::Callback(ch);
    std::atomic<bool> started{false};
    std::thread engine([&] {
      for (int i = 0; i < 2000; ++i) {
        started = true;
        if (!cb(Token(i))) break;
      }
      BatchEvent done;
      done.kind = BatchEvent::Kind::kDone;
      cb(done);  // kDone is always sent
      cb = nullptr;
    });
    while (!started) std::this_thread::yield();
    ch->Close();
    ch.reset();
    engine.join();
    EXPECT_EQ(cb, nullptr);
  }
}

}  // namespace
}  // namespace vibrant::server
