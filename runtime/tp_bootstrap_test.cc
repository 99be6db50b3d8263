// The tensor-parallel bootstrap: the environment's values and errors, and the
// unique-id exchange between real processes (fork) on 127.0.0.1, including
// what happens when rank 0 is missing, a peer is missing, peers disagree on
// the world size or the rank, or something else speaks on the port.
#include "runtime/tp_bootstrap.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vibrant {
namespace {

using ::testing::HasSubstr;
using Id = std::array<uint8_t, 128>;

// ---- the environment ---------------------------------------------------------------

EnvLookup Lookup(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](absl::string_view name) -> std::optional<std::string> {
    auto it = vars.find(std::string(name));
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

TEST(TpEnv, NothingSetIsOneProcess) {
  auto env = ParseTpEnv(Lookup({}));
  ASSERT_TRUE(env.ok()) << env.status();
  EXPECT_EQ(env->rank, 0);
  EXPECT_EQ(env->world_size, 1);
  EXPECT_EQ(env->local_rank, 0);
  EXPECT_EQ(env->host, "");
  EXPECT_EQ(env->source, "default");
}

TEST(TpEnv, ReadsVibrantsVariables) {
  auto env = ParseTpEnv(Lookup({{"VIBRANT_TP_RANK", "5"},
                                {"VIBRANT_TP_WORLD_SIZE", "8"},
                                {"VIBRANT_TP_ADDR", "node0.example:29500"},
                                {"VIBRANT_TP_LOCAL_RANK", "1"}}));
  ASSERT_TRUE(env.ok()) << env.status();
  EXPECT_EQ(env->rank, 5);
  EXPECT_EQ(env->world_size, 8);
  EXPECT_EQ(env->local_rank, 1);
  EXPECT_EQ(env->host, "node0.example");
  EXPECT_EQ(env->port, 29500);
  EXPECT_EQ(env->Address(), "node0.example:29500");
  EXPECT_EQ(env->source, "VIBRANT_TP_*");
}

TEST(TpEnv, LocalRankDefaultsToTheRank) {
  auto env = ParseTpEnv(Lookup({{"VIBRANT_TP_RANK", "3"},
                                {"VIBRANT_TP_WORLD_SIZE", "4"},
                                {"VIBRANT_TP_ADDR", "10.1.2.3:1"}}));
  ASSERT_TRUE(env.ok()) << env.status();
  EXPECT_EQ(env->local_rank, 3);
  EXPECT_EQ(env->port, 1);
}

TEST(TpEnv, AcceptsABracketedIpv6Address) {
  auto env = ParseTpEnv(Lookup({{"VIBRANT_TP_RANK", "0"},
                                {"VIBRANT_TP_WORLD_SIZE", "2"},
                                {"VIBRANT_TP_ADDR", "[::1]:65535"}}));
  ASSERT_TRUE(env.ok()) << env.status();
  EXPECT_EQ(env->host, "::1");
  EXPECT_EQ(env->port, 65535);
  EXPECT_EQ(env->Address(), "[::1]:65535");
}

TEST(TpEnv, ReadsTorchrunsVariables) {
  auto env = ParseTpEnv(Lookup({{"RANK", "6"},
                                {"WORLD_SIZE", "8"},
                                {"LOCAL_RANK", "2"},
                                {"MASTER_ADDR", "10.0.0.1"},
                                {"MASTER_PORT", "29500"}}));
  ASSERT_TRUE(env.ok()) << env.status();
  EXPECT_EQ(env->rank, 6);
  EXPECT_EQ(env->world_size, 8);
  EXPECT_EQ(env->local_rank, 2);
  EXPECT_EQ(env->Address(), "10.0.0.1:29500");
  EXPECT_THAT(env->source, HasSubstr("torchrun"));
}

TEST(TpEnv, UnderTorchrunsAgentStoreRankZeroTakesTheNextPort) {
  // torchrun tells its workers that its agent serves MASTER_PORT.
  auto env = ParseTpEnv(Lookup({{"RANK", "0"},
                                {"WORLD_SIZE", "2"},
                                {"MASTER_ADDR", "10.0.0.1"},
                                {"MASTER_PORT", "29500"},
                                {"TORCHELASTIC_USE_AGENT_STORE", "True"}}));
  ASSERT_TRUE(env.ok()) << env.status();
  EXPECT_EQ(env->Address(), "10.0.0.1:29501");
  EXPECT_THAT(env->source, HasSubstr("MASTER_PORT + 1"));
}

TEST(TpEnv, VibrantsAddressAndLocalRankOverrideTorchruns) {
  auto env = ParseTpEnv(Lookup({{"RANK", "3"},
                                {"WORLD_SIZE", "4"},
                                {"LOCAL_RANK", "3"},
                                {"MASTER_ADDR", "10.0.0.1"},
                                {"MASTER_PORT", "29500"},
                                {"TORCHELASTIC_USE_AGENT_STORE", "True"},
                                {"VIBRANT_TP_ADDR", "10.0.0.9:40000"},
                                {"VIBRANT_TP_LOCAL_RANK", "0"}}));
  ASSERT_TRUE(env.ok()) << env.status();
  EXPECT_EQ(env->rank, 3);
  EXPECT_EQ(env->world_size, 4);
  EXPECT_EQ(env->local_rank, 0);
  EXPECT_EQ(env->Address(), "10.0.0.9:40000");
}

TEST(TpEnv, VibrantsVariablesWinOverTorchruns) {
  auto env = ParseTpEnv(Lookup({{"VIBRANT_TP_RANK", "1"},
                                {"VIBRANT_TP_WORLD_SIZE", "2"},
                                {"VIBRANT_TP_ADDR", "a:10"},
                                {"RANK", "junk"},
                                {"WORLD_SIZE", "7"},
                                {"MASTER_ADDR", "b"},
                                {"MASTER_PORT", "20"}}));
  ASSERT_TRUE(env.ok()) << env.status();
  EXPECT_EQ(env->rank, 1);
  EXPECT_EQ(env->world_size, 2);
  EXPECT_EQ(env->Address(), "a:10");
}

TEST(TpEnv, OneProcessNeedsNoAddress) {
  auto env = ParseTpEnv(Lookup({{"VIBRANT_TP_RANK", "0"}, {"VIBRANT_TP_WORLD_SIZE", "1"}}));
  ASSERT_TRUE(env.ok()) << env.status();
  EXPECT_EQ(env->world_size, 1);
  auto t = ParseTpEnv(Lookup({{"RANK", "0"}, {"WORLD_SIZE", "1"}}));
  ASSERT_TRUE(t.ok()) << t.status();
}

struct BadEnv {
  std::map<std::string, std::string> vars;
  std::string message;  // a part of the expected error
};

TEST(TpEnv, BadValuesAreErrorsNamingTheVariable) {
  const std::map<std::string, std::string> ok = {
      {"VIBRANT_TP_RANK", "1"}, {"VIBRANT_TP_WORLD_SIZE", "2"}, {"VIBRANT_TP_ADDR", "h:29500"}};
  auto with = [&](std::string k, std::string v) {
    auto m = ok;
    m[k] = v;
    return m;
  };
  auto without = [&](std::string k) {
    auto m = ok;
    m.erase(k);
    return m;
  };
  const std::map<std::string, std::string> torch = {
      {"RANK", "1"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"}, {"MASTER_PORT", "29500"}};
  auto t_with = [&](std::string k, std::string v) {
    auto m = torch;
    m[k] = v;
    return m;
  };
  auto t_without = [&](std::string k) {
    auto m = torch;
    m.erase(k);
    return m;
  };
  const std::vector<BadEnv> cases = {
      {with("VIBRANT_TP_RANK", "abc"),
       "VIBRANT_TP_RANK='abc' is not a non-negative decimal integer"},
      {with("VIBRANT_TP_RANK", "-1"), "VIBRANT_TP_RANK='-1' is not a non-negative"},
      {with("VIBRANT_TP_RANK", " 1"), "VIBRANT_TP_RANK=' 1' is not a non-negative"},
      {with("VIBRANT_TP_RANK", "1x"), "VIBRANT_TP_RANK='1x' is not a non-negative"},
      {with("VIBRANT_TP_RANK", ""), "VIBRANT_TP_RANK is set but empty"},
      {with("VIBRANT_TP_RANK", "2"),
       "VIBRANT_TP_RANK=2 is not below the world size VIBRANT_TP_WORLD_SIZE=2"},
      {with("VIBRANT_TP_RANK", "99999999999999999999"),
       "VIBRANT_TP_RANK='99999999999999999999' is out of range"},
      {with("VIBRANT_TP_WORLD_SIZE", "0"),
       "VIBRANT_TP_WORLD_SIZE='0': the world size must be at least 1"},
      {with("VIBRANT_TP_WORLD_SIZE", "two"), "VIBRANT_TP_WORLD_SIZE='two' is not"},
      {with("VIBRANT_TP_WORLD_SIZE", "100000"), "VIBRANT_TP_WORLD_SIZE='100000' is out of range"},
      {with("VIBRANT_TP_LOCAL_RANK", "x"), "VIBRANT_TP_LOCAL_RANK='x' is not"},
      {with("VIBRANT_TP_ADDR", "h"), "VIBRANT_TP_ADDR='h': expected HOST:PORT (no port)"},
      {with("VIBRANT_TP_ADDR", "h:"), "VIBRANT_TP_ADDR='h:': expected HOST:PORT (no port)"},
      {with("VIBRANT_TP_ADDR", ":29500"), "VIBRANT_TP_ADDR=':29500': expected HOST:PORT (no host)"},
      {with("VIBRANT_TP_ADDR", "h:0"), "VIBRANT_TP_ADDR: port '0' is out of range (1 .. 65535)"},
      {with("VIBRANT_TP_ADDR", "h:65536"),
       "VIBRANT_TP_ADDR: port '65536' is out of range (1 .. 65535)"},
      {with("VIBRANT_TP_ADDR", "h:http"), "VIBRANT_TP_ADDR='http' is not a non-negative"},
      {with("VIBRANT_TP_ADDR", "::1:29500"),
       "VIBRANT_TP_ADDR='::1:29500': an IPv6 address needs brackets"},
      {with("VIBRANT_TP_ADDR", "[::1:29500"), "VIBRANT_TP_ADDR='[::1:29500': no ']'"},
      {without("VIBRANT_TP_ADDR"), "VIBRANT_TP_ADDR is not set; with VIBRANT_TP_WORLD_SIZE=2"},
      {without("VIBRANT_TP_WORLD_SIZE"), "VIBRANT_TP_WORLD_SIZE is not set"},
      {without("VIBRANT_TP_RANK"), "VIBRANT_TP_RANK is not set"},
      {{{"VIBRANT_TP_ADDR", "h:1"}},
       "VIBRANT_TP_ADDR is set but VIBRANT_TP_RANK and VIBRANT_TP_WORLD_SIZE are not"},
      {{{"VIBRANT_TP_LOCAL_RANK", "1"}}, "VIBRANT_TP_LOCAL_RANK is set but VIBRANT_TP_RANK"},
      {[&] {
         auto m = t_with("MASTER_PORT", "65535");
         m["TORCHELASTIC_USE_AGENT_STORE"] = "True";
         return m;
       }(),
       "MASTER_PORT=65535: torchrun's agent holds it"},
      {t_with("RANK", "x"), "RANK='x' is not a non-negative"},
      {t_with("RANK", "2"), "RANK=2 is not below the world size WORLD_SIZE=2"},
      {t_with("LOCAL_RANK", "-3"), "LOCAL_RANK='-3' is not"},
      {t_with("MASTER_PORT", "abc"), "MASTER_PORT='abc' is not a non-negative"},
      {t_with("MASTER_PORT", "70000"), "MASTER_PORT: port '70000' is out of range"},
      {t_with("MASTER_ADDR", ""), "MASTER_ADDR is set but empty"},
      {t_without("MASTER_ADDR"), "MASTER_ADDR is not set; with WORLD_SIZE=2"},
      {t_without("MASTER_PORT"), "MASTER_PORT is not set; with WORLD_SIZE=2"},
      {t_without("WORLD_SIZE"), "WORLD_SIZE is not set"},
  };
  for (const BadEnv& c : cases) {
    std::string vars;
    for (const auto& [k, v] : c.vars) vars += k + "='" + v + "' ";
    SCOPED_TRACE(vars);
    auto env = ParseTpEnv(Lookup(c.vars));
    ASSERT_FALSE(env.ok()) << "parsed as rank " << env->rank << " of " << env->world_size;
    EXPECT_EQ(env.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(env.status().message()), HasSubstr(c.message));
  }
}

TEST(TpEnv, FromTheProcessEnvironment) {
  const char* names[] = {"VIBRANT_TP_RANK", "VIBRANT_TP_WORLD_SIZE", "VIBRANT_TP_ADDR",
                         "VIBRANT_TP_LOCAL_RANK"};
  std::map<std::string, std::optional<std::string>> saved;
  for (const char* n : names) {
    const char* v = std::getenv(n);
    saved[n] = v != nullptr ? std::optional<std::string>(v) : std::nullopt;
  }
  setenv("VIBRANT_TP_RANK", "1", 1);
  setenv("VIBRANT_TP_WORLD_SIZE", "3", 1);
  setenv("VIBRANT_TP_ADDR", "127.0.0.1:4242", 1);
  unsetenv("VIBRANT_TP_LOCAL_RANK");
  auto env = TpEnvFromEnvironment();
  for (const auto& [n, v] : saved) {
    if (v) {
      setenv(n.c_str(), v->c_str(), 1);
    } else {
      unsetenv(n.c_str());
    }
  }
  ASSERT_TRUE(env.ok()) << env.status();
  EXPECT_EQ(env->rank, 1);
  EXPECT_EQ(env->world_size, 3);
  EXPECT_EQ(env->Address(), "127.0.0.1:4242");
}

// ---- the exchange ------------------------------------------------------------------

// A port on 127.0.0.1 that was free a moment ago (the kernel's choice).
int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  EXPECT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  socklen_t len = sizeof a;
  EXPECT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len), 0);
  close(fd);
  return ntohs(a.sin_port);
}

TpEnv Rank(int rank, int world, int port) {
  TpEnv env;
  env.rank = rank;
  env.world_size = world;
  env.local_rank = rank;
  env.host = "127.0.0.1";
  env.port = port;
  env.source = "the test";
  return env;
}

Id Pattern(uint8_t seed) {
  Id id;
  for (size_t i = 0; i < id.size(); ++i) id[i] = static_cast<uint8_t>(seed + 37 * i);
  return id;
}

// What a child process reports: its status and the id it ended with.
struct ChildResult {
  bool exited = false;  // exited normally (not killed)
  absl::StatusCode code = absl::StatusCode::kUnknown;
  std::string message;
  Id id{};
};

struct Child {
  pid_t pid = -1;
  int pipe_fd = -1;
};

// Forks a process that runs ExchangeUniqueId(env, id, timeout) after
// `delay`, and writes the code, the id and the message into a pipe.
Child Spawn(const TpEnv& env, Id id, absl::Duration timeout,
            std::chrono::milliseconds delay = std::chrono::milliseconds(0)) {
  int fds[2];
  EXPECT_EQ(pipe(fds), 0);
  const pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    std::this_thread::sleep_for(delay);
    const absl::Status s = ExchangeUniqueId(env, id, timeout);
    std::string out(1, static_cast<char>(s.code()));
    out.append(reinterpret_cast<const char*>(id.data()), id.size());
    out.append(std::string(s.message()));
    size_t done = 0;
    while (done < out.size()) {
      const ssize_t w = write(fds[1], out.data() + done, out.size() - done);
      if (w <= 0) break;
      done += static_cast<size_t>(w);
    }
    _exit(0);
  }
  close(fds[1]);
  return {pid, fds[0]};
}

// Waits for the children, at most `limit` in all; kills those still running
// (so that a hang is a failure, not a stuck test).
std::vector<ChildResult> Collect(std::vector<Child> children, std::chrono::milliseconds limit) {
  std::vector<ChildResult> results(children.size());
  const auto deadline = std::chrono::steady_clock::now() + limit;
  for (size_t i = 0; i < children.size(); ++i) {
    int wstatus = 0;
    pid_t r = 0;
    while ((r = waitpid(children[i].pid, &wstatus, WNOHANG)) == 0 &&
           std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (r == 0) {
      kill(children[i].pid, SIGKILL);
      waitpid(children[i].pid, &wstatus, 0);
      ADD_FAILURE() << "child " << i << " still ran after " << limit.count() << " ms; killed";
    }
    std::string out;
    char buf[4096];
    ssize_t n;
    while ((n = read(children[i].pipe_fd, buf, sizeof buf)) > 0) out.append(buf, n);
    close(children[i].pipe_fd);
    ChildResult& res = results[i];
    res.exited = r > 0 && WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0;
    if (out.size() >= 1 + res.id.size()) {
      res.code = static_cast<absl::StatusCode>(static_cast<unsigned char>(out[0]));
      std::memcpy(res.id.data(), out.data() + 1, res.id.size());
      res.message = out.substr(1 + res.id.size());
    } else {
      res.exited = false;
    }
  }
  return results;
}

void ExchangeAmong(int world, std::chrono::milliseconds rank0_delay) {
  SCOPED_TRACE(::testing::Message() << "world size " << world);
  const int port = FreePort();
  const Id served = Pattern(11);
  std::vector<Child> children;
  // The others first: they must wait for rank 0, retrying.
  for (int r = 1; r < world; ++r) {
    children.push_back(Spawn(Rank(r, world, port), Pattern(200 + r), absl::Seconds(20)));
  }
  children.insert(children.begin(),
                  Spawn(Rank(0, world, port), served, absl::Seconds(20), rank0_delay));
  std::vector<ChildResult> results = Collect(children, std::chrono::seconds(30));
  for (int r = 0; r < world; ++r) {
    ASSERT_TRUE(results[r].exited) << "rank " << r << " did not report";
    EXPECT_EQ(results[r].code, absl::StatusCode::kOk) << "rank " << r << ": " << results[r].message;
    EXPECT_EQ(results[r].id, served) << "rank " << r << " ended with another id";
  }
}

TEST(ExchangeUniqueId, TwoProcessesGetRankZerosId) {
  ExchangeAmong(2, std::chrono::milliseconds(0));
}

TEST(ExchangeUniqueId, FourProcessesGetRankZerosIdWhenRankZeroStartsLast) {
  ExchangeAmong(4, std::chrono::milliseconds(300));
}

TEST(ExchangeUniqueId, OneProcessKeepsItsIdAndNeedsNoAddress) {
  TpEnv env;  // rank 0 of 1, no address
  Id id = Pattern(3);
  EXPECT_TRUE(ExchangeUniqueId(env, id, absl::Milliseconds(1)).ok());
  EXPECT_EQ(id, Pattern(3));
}

TEST(ExchangeUniqueId, AnInvalidEnvIsInvalidArgument) {
  Id id{};
  EXPECT_EQ(ExchangeUniqueId(Rank(2, 2, 1234), id, absl::Seconds(1)).code(),
            absl::StatusCode::kInvalidArgument);
  TpEnv no_addr = Rank(1, 2, 0);
  no_addr.host = "";
  EXPECT_EQ(ExchangeUniqueId(no_addr, id, absl::Seconds(1)).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ExchangeUniqueId, MissingRankZeroIsDeadlineExceededWithinTheTimeout) {
  const int port = FreePort();  // nobody listens
  Id id = Pattern(1);
  const auto start = std::chrono::steady_clock::now();
  absl::Status s = ExchangeUniqueId(Rank(1, 2, port), id, absl::Milliseconds(700));
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("could not reach rank 0 at 127.0.0.1:" + std::to_string(port)));
  EXPECT_THAT(std::string(s.message()), HasSubstr("Connection refused"));
  // It retried until the deadline (not failing at the first refusal) and
  // returned soon after it (1.5 s of slack for a loaded 2-core machine).
  EXPECT_GE(took, std::chrono::milliseconds(700));
  EXPECT_LT(took, std::chrono::milliseconds(2200));
  EXPECT_EQ(id, Pattern(1));  // untouched
}

TEST(ExchangeUniqueId, AMissingPeerIsDeadlineExceededNamingItsRank) {
  const int port = FreePort();
  // Ranks 0 and 2 of 3 come; rank 1 never does.
  std::vector<Child> children = {Spawn(Rank(2, 3, port), Pattern(9), absl::Seconds(10))};
  Id id = Pattern(5);
  const auto start = std::chrono::steady_clock::now();
  absl::Status s = ExchangeUniqueId(Rank(0, 3, port), id, absl::Milliseconds(1500));
  const auto took = std::chrono::steady_clock::now() - start;
  std::vector<ChildResult> results = Collect(children, std::chrono::seconds(15));
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("1 of 2 ranks connected"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("missing rank 1"));
  EXPECT_LT(took, std::chrono::milliseconds(3000));
  ASSERT_TRUE(results[0].exited);
  EXPECT_EQ(results[0].code, absl::StatusCode::kOk) << results[0].message;
  EXPECT_EQ(results[0].id, Pattern(5));
}

TEST(ExchangeUniqueId, APeerWithAnotherWorldSizeIsAnErrorOnBothSides) {
  const int port = FreePort();
  std::vector<Child> children = {Spawn(Rank(0, 2, port), Pattern(1), absl::Seconds(10))};
  Id id = Pattern(2);
  absl::Status s = ExchangeUniqueId(Rank(1, 3, port), id, absl::Seconds(10));
  std::vector<ChildResult> results = Collect(children, std::chrono::seconds(15));
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("has world size 2, this process 3"));
  EXPECT_EQ(id, Pattern(2));  // no id taken from a refused exchange
  ASSERT_TRUE(results[0].exited);
  EXPECT_EQ(results[0].code, absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(results[0].message, HasSubstr("says the world size is 3, this rank 0 has 2"));
}

TEST(ExchangeUniqueId, TwoPeersWithOneRankAreAnError) {
  const int port = FreePort();
  std::vector<Child> children = {
      Spawn(Rank(0, 3, port), Pattern(1), absl::Seconds(10)),
      Spawn(Rank(1, 3, port), Pattern(2), absl::Seconds(10)),
      Spawn(Rank(1, 3, port), Pattern(3), absl::Seconds(10), std::chrono::milliseconds(300))};
  std::vector<ChildResult> results = Collect(children, std::chrono::seconds(15));
  for (const ChildResult& r : results) ASSERT_TRUE(r.exited);
  EXPECT_EQ(results[0].code, absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(results[0].message, HasSubstr("claims rank 1, which another process already has"));
  EXPECT_EQ(results[1].code, absl::StatusCode::kOk) << results[1].message;
  EXPECT_EQ(results[2].code, absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(results[2].message, HasSubstr("already has a process with rank 1"));
}

// Connects to 127.0.0.1:port, retrying for up to 5 s.
int ConnectRetrying(int port) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (std::chrono::steady_clock::now() < deadline) {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<uint16_t>(port));
    if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) return fd;
    close(fd);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return -1;
}

TEST(ExchangeUniqueId, AStrayConnectionToRankZeroIsANamedError) {
  const int port = FreePort();
  std::vector<Child> children = {Spawn(Rank(0, 2, port), Pattern(1), absl::Seconds(10))};
  const int fd = ConnectRetrying(port);
  ASSERT_GE(fd, 0);
  const std::string http = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  ASSERT_EQ(write(fd, http.data(), http.size()), static_cast<ssize_t>(http.size()));
  std::vector<ChildResult> results = Collect(children, std::chrono::seconds(15));
  close(fd);
  ASSERT_TRUE(results[0].exited);
  EXPECT_EQ(results[0].code, absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(results[0].message, HasSubstr("a stray connection from 127.0.0.1:"));
}

TEST(ExchangeUniqueId, AnotherProgramOnRankZerosPortIsANamedError) {
  // A server that greets like SSH and closes.
  const int lfd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(lfd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(listen(lfd, 4), 0);
  socklen_t len = sizeof a;
  ASSERT_EQ(getsockname(lfd, reinterpret_cast<sockaddr*>(&a), &len), 0);
  const int port = ntohs(a.sin_port);
  std::thread server([lfd] {
    pollfd p{lfd, POLLIN, 0};
    if (poll(&p, 1, 5000) != 1) return;
    const int c = accept(lfd, nullptr, nullptr);
    const std::string greet = "SSH-2.0-OpenSSH_9.2\r\n";
    (void)!write(c, greet.data(), greet.size());
    char buf[64];
    (void)!read(c, buf, sizeof buf);  // the hello
    close(c);
  });
  Id id = Pattern(4);
  absl::Status s = ExchangeUniqueId(Rank(1, 2, port), id, absl::Seconds(5));
  server.join();
  close(lfd);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("does not speak Vibrant's tensor-parallel bootstrap"));
  EXPECT_EQ(id, Pattern(4));
}

TEST(ExchangeUniqueId, RankZeroOnABusyPortIsUnavailable) {
  const int lfd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_ANY);
  ASSERT_EQ(bind(lfd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(listen(lfd, 4), 0);
  socklen_t len = sizeof a;
  ASSERT_EQ(getsockname(lfd, reinterpret_cast<sockaddr*>(&a), &len), 0);
  Id id = Pattern(1);
  absl::Status s = ExchangeUniqueId(Rank(0, 2, ntohs(a.sin_port)), id, absl::Seconds(2));
  close(lfd);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("rank 0 cannot listen on port"));
}

}  // namespace
}  // namespace vibrant
