#include "runtime/tp_bootstrap.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace vibrant {

namespace {

// ---- the environment ---------------------------------------------------------------

// A non-negative decimal integer, digits only (no sign, no spaces), at most `max`.
absl::StatusOr<int> ParseCount(absl::string_view name, absl::string_view value, int64_t max) {
  if (value.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(name, " is set but empty"));
  }
  int64_t v = 0;
  for (char c : value) {
    if (c < '0' || c > '9') {
      return absl::InvalidArgumentError(
          absl::StrCat(name, "='", value, "' is not a non-negative decimal integer"));
    }
    v = v * 10 + (c - '0');
    if (v > max) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, "='", value, "' is out of range (at most ", max, ")"));
    }
  }
  return static_cast<int>(v);
}

absl::StatusOr<int> ParsePort(absl::string_view name, absl::string_view value) {
  absl::StatusOr<int> port = ParseCount(name, value, 65535);
  if (!port.ok()) {
    if (absl::IsInvalidArgument(port.status()) && !value.empty() &&
        value.find_first_not_of("0123456789") == absl::string_view::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, ": port '", value, "' is out of range (1 .. 65535)"));
    }
    return port.status();
  }
  if (*port < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": port '", value, "' is out of range (1 .. 65535)"));
  }
  return port;
}

// ---- sockets ------------------------------------------------------------------------

using Clock = std::chrono::steady_clock;

class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) {
      Reset();
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  ~Fd() { Reset(); }
  void Reset() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }
  int get() const { return fd_; }
  bool ok() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

std::string Errno(int e) { return std::strerror(e); }

// Milliseconds left until `deadline` for poll(), rounded up, at least 0.
int RemainingMs(Clock::time_point deadline) {
  const auto left = deadline - Clock::now();
  if (left <= Clock::duration::zero()) return 0;
  const int64_t ms = std::chrono::ceil<std::chrono::milliseconds>(left).count();
  return static_cast<int>(std::min<int64_t>(ms, INT_MAX));
}

// Waits for `events` on fd until the deadline. OK when ready; DeadlineExceeded
// (naming `what`) when time ran out.
absl::Status WaitFor(int fd, short events, Clock::time_point deadline, const std::string& what) {
  for (;;) {
    const int ms = RemainingMs(deadline);
    if (ms == 0) return absl::DeadlineExceededError(what);
    pollfd p{fd, events, 0};
    const int r = poll(&p, 1, ms);
    if (r > 0) return absl::OkStatus();  // ready, or an error the next call reports
    if (r < 0 && errno != EINTR) {
      return absl::UnavailableError(absl::StrCat(what, ": poll: ", Errno(errno)));
    }
  }
}

absl::Status WriteAll(int fd, const uint8_t* data, size_t n, Clock::time_point deadline,
                      const std::string& what) {
  size_t done = 0;
  while (done < n) {
    const ssize_t w = send(fd, data + done, n - done, MSG_NOSIGNAL);
    if (w > 0) {
      done += static_cast<size_t>(w);
      continue;
    }
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (absl::Status s = WaitFor(fd, POLLOUT, deadline, absl::StrCat("timed out ", what));
          !s.ok()) {
        return s;
      }
      continue;
    }
    return absl::UnavailableError(absl::StrCat(what, ": ", Errno(errno)));
  }
  return absl::OkStatus();
}

// Reads exactly n bytes. *eof_at receives how many came before the peer
// closed (the status is then Unavailable).
absl::Status ReadAll(int fd, uint8_t* data, size_t n, Clock::time_point deadline,
                     const std::string& what, size_t* got = nullptr) {
  size_t done = 0;
  auto finish = [&](absl::Status s) {
    if (got != nullptr) *got = done;
    return s;
  };
  while (done < n) {
    const ssize_t r = recv(fd, data + done, n - done, 0);
    if (r > 0) {
      done += static_cast<size_t>(r);
      continue;
    }
    if (r == 0) {
      return finish(absl::UnavailableError(absl::StrCat(
          what, ": the peer closed the connection after ", done, " of ", n, " bytes")));
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      if (absl::Status s = WaitFor(fd, POLLIN, deadline, absl::StrCat("timed out ", what));
          !s.ok()) {
        return finish(s);
      }
      continue;
    }
    return finish(absl::UnavailableError(absl::StrCat(what, ": ", Errno(errno))));
  }
  return finish(absl::OkStatus());
}

std::string PeerName(const sockaddr* sa, socklen_t len) {
  sockaddr_in v4{};
  if (sa->sa_family == AF_INET6 && len >= static_cast<socklen_t>(sizeof(sockaddr_in6))) {
    // An IPv4 peer of the dual-stack listener: show it as IPv4.
    const sockaddr_in6* v6 = reinterpret_cast<const sockaddr_in6*>(sa);
    if (IN6_IS_ADDR_V4MAPPED(&v6->sin6_addr)) {
      v4.sin_family = AF_INET;
      v4.sin_port = v6->sin6_port;
      std::memcpy(&v4.sin_addr, v6->sin6_addr.s6_addr + 12, 4);
      sa = reinterpret_cast<const sockaddr*>(&v4);
      len = sizeof v4;
    }
  }
  char host[NI_MAXHOST], serv[NI_MAXSERV];
  const int flags = NI_NUMERICHOST | NI_NUMERICSERV;
  if (getnameinfo(sa, len, host, sizeof host, serv, sizeof serv, flags) != 0) {
    return "an unknown peer";
  }
  return sa->sa_family == AF_INET6 ? absl::StrCat("[", host, "]:", serv)
                                   : absl::StrCat(host, ":", serv);
}

// ---- the protocol -------------------------------------------------------------------
//
// All integers little-endian u32.
//   hello (rank r -> rank 0): magic, version, world size, rank               16 bytes
//   reply (rank 0 -> rank r): magic, version, world size, verdict, id[128]  144 bytes
// The verdict is kOk, or why rank 0 refuses r (the id is then zeros). Rank 0
// reads exactly a hello and the rank exactly a reply, so neither side closes
// with unread data (which would reset the connection).

constexpr uint32_t kMagic = 0x42505456;  // "VTPB" in memory
constexpr uint32_t kVersion = 1;
constexpr size_t kHelloBytes = 16;
constexpr size_t kReplyBytes = 16 + 128;

enum Verdict : uint32_t {
  kOk = 0,
  kWorldSizeDiffers = 1,
  kRankOutOfRange = 2,
  kRankTaken = 3,
  kVersionDiffers = 4,
};

void Put32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
uint32_t Get32(const uint8_t* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(p[i]) << (8 * i);
  return v;
}

absl::StatusOr<std::vector<addrinfo*>> Resolve(const TpEnv& env, addrinfo** owned) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  const std::string port = std::to_string(env.port);
  const int r = getaddrinfo(env.host.c_str(), port.c_str(), &hints, owned);
  if (r != 0) {
    return absl::InvalidArgumentError(absl::StrCat("tensor-parallel bootstrap: cannot resolve '",
                                                   env.host, "' (rank 0's host, from ", env.source,
                                                   "): ", gai_strerror(r)));
  }
  std::vector<addrinfo*> list;
  for (addrinfo* a = *owned; a != nullptr; a = a->ai_next) list.push_back(a);
  return list;
}

// Rank 0's listening socket: every interface, IPv6 with IPv4 mapped where the
// host has IPv6, else IPv4.
absl::StatusOr<Fd> Listen(const TpEnv& env) {
  std::string errors;
  for (int family : {AF_INET6, AF_INET}) {
    Fd fd(socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd.ok()) {
      absl::StrAppend(&errors, family == AF_INET6 ? "IPv6" : "; IPv4", " socket: ", Errno(errno));
      continue;
    }
    const int one = 1, zero = 0;
    setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    int r;
    if (family == AF_INET6) {
      setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
      sockaddr_in6 a{};
      a.sin6_family = AF_INET6;
      a.sin6_addr = in6addr_any;
      a.sin6_port = htons(static_cast<uint16_t>(env.port));
      r = bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a);
    } else {
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_addr.s_addr = htonl(INADDR_ANY);
      a.sin_port = htons(static_cast<uint16_t>(env.port));
      r = bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a);
    }
    if (r != 0) {
      const int e = errno;
      if (e == EADDRINUSE) {
        return absl::UnavailableError(
            absl::StrCat("tensor-parallel bootstrap: rank 0 cannot listen on port ", env.port,
                         " (from ", env.source, "): ", Errno(e), "; choose another port"));
      }
      absl::StrAppend(&errors, errors.empty() ? "" : "; ", family == AF_INET6 ? "IPv6" : "IPv4",
                      " bind: ", Errno(e));
      continue;
    }
    if (listen(fd.get(), SOMAXCONN) != 0) {
      absl::StrAppend(&errors, errors.empty() ? "" : "; ", "listen: ", Errno(errno));
      continue;
    }
    return fd;
  }
  return absl::UnavailableError(
      absl::StrCat("tensor-parallel bootstrap: rank 0 cannot listen on port ", env.port, " (from ",
                   env.source, "): ", errors));
}

absl::Status Serve(const TpEnv& env, const std::array<uint8_t, 128>& id, Clock::time_point deadline,
                   absl::Duration timeout) {
  absl::StatusOr<Fd> listener = Listen(env);
  if (!listener.ok()) return listener.status();
  std::vector<bool> joined(env.world_size, false);
  joined[0] = true;
  int remaining = env.world_size - 1;
  const std::string me = absl::StrCat("tensor-parallel bootstrap: rank 0 of ", env.world_size,
                                      " (port ", env.port, ")");
  while (remaining > 0) {
    absl::Status w = WaitFor(listener->get(), POLLIN, deadline, "");
    if (absl::IsDeadlineExceeded(w)) {
      std::vector<int> missing;
      for (int r = 1; r < env.world_size; ++r) {
        if (!joined[r]) missing.push_back(r);
      }
      return absl::DeadlineExceededError(
          absl::StrCat(me, ": ", env.world_size - 1 - remaining, " of ", env.world_size - 1,
                       " ranks connected within ", absl::FormatDuration(timeout), "; missing rank",
                       missing.size() == 1 ? " " : "s ", absl::StrJoin(missing, ", ")));
    }
    if (!w.ok()) return w;
    sockaddr_storage peer{};
    socklen_t peer_len = sizeof peer;
    Fd conn(accept4(listener->get(), reinterpret_cast<sockaddr*>(&peer), &peer_len,
                    SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (!conn.ok()) {
      const int e = errno;
      if (e == EINTR || e == EAGAIN || e == EWOULDBLOCK || e == ECONNABORTED) continue;
      return absl::UnavailableError(absl::StrCat(me, ": accept: ", Errno(e)));
    }
    const std::string who = PeerName(reinterpret_cast<sockaddr*>(&peer), peer_len);
    uint8_t hello[kHelloBytes];
    size_t got = 0;
    if (absl::Status s = ReadAll(conn.get(), hello, sizeof hello, deadline,
                                 absl::StrCat("reading the hello of ", who), &got);
        !s.ok()) {
      // A peer that closed before a whole hello, or began with a wrong magic,
      // is not one of ours (a timeout stays a timeout).
      if ((got >= 4 && Get32(hello) != kMagic) || absl::IsUnavailable(s)) {
        return absl::FailedPreconditionError(absl::StrCat(
            me, ": a stray connection from ", who,
            " (not Vibrant's tensor-parallel bootstrap; is another program using this port?)"));
      }
      return absl::Status(s.code(), absl::StrCat(me, ": ", s.message()));
    }
    const uint32_t magic = Get32(hello), version = Get32(hello + 4);
    const uint32_t world = Get32(hello + 8), rank = Get32(hello + 12);
    if (magic != kMagic) {
      return absl::FailedPreconditionError(absl::StrCat(
          me, ": a stray connection from ", who,
          " (not Vibrant's tensor-parallel bootstrap; is another program using this port?)"));
    }
    uint32_t verdict = kOk;
    std::string why;
    if (version != kVersion) {
      verdict = kVersionDiffers;
      why = absl::StrCat("speaks bootstrap protocol ", version, ", this rank ", kVersion,
                         " (different Vibrant builds?)");
    } else if (world != static_cast<uint32_t>(env.world_size)) {
      verdict = kWorldSizeDiffers;
      why = absl::StrCat("says the world size is ", world, ", this rank 0 has ", env.world_size,
                         " (the processes disagree on the world size in ", env.source, ")");
    } else if (rank < 1 || rank >= world) {
      verdict = kRankOutOfRange;
      why = absl::StrCat("claims rank ", rank, ", outside 1 .. ", env.world_size - 1);
    } else if (joined[rank]) {
      verdict = kRankTaken;
      why = absl::StrCat("claims rank ", rank, ", which another process already has");
    }
    uint8_t reply[kReplyBytes] = {};
    Put32(reply, kMagic);
    Put32(reply + 4, kVersion);
    Put32(reply + 8, static_cast<uint32_t>(env.world_size));
    Put32(reply + 12, verdict);
    if (verdict == kOk) std::memcpy(reply + 16, id.data(), id.size());
    absl::Status sent = WriteAll(conn.get(), reply, sizeof reply, deadline,
                                 absl::StrCat("sending the unique id to ", who));
    if (verdict != kOk) {
      return absl::FailedPreconditionError(absl::StrCat(me, ": the process at ", who, " ", why));
    }
    if (!sent.ok()) return absl::Status(sent.code(), absl::StrCat(me, ": ", sent.message()));
    joined[rank] = true;
    --remaining;
  }
  return absl::OkStatus();
}

// One connection attempt to each resolved address; the first that connects.
// *last_error receives why the others failed.
Fd TryConnect(const std::vector<addrinfo*>& addrs, Clock::time_point deadline,
              std::string* last_error) {
  for (addrinfo* a : addrs) {
    Fd fd(socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol));
    if (!fd.ok()) {
      *last_error = absl::StrCat("socket: ", Errno(errno));
      continue;
    }
    int r = connect(fd.get(), a->ai_addr, a->ai_addrlen);
    if (r != 0 && errno == EINPROGRESS) {
      if (!WaitFor(fd.get(), POLLOUT, deadline, "").ok()) {
        // Out of time: an earlier attempt's reason (e.g. refused) says more.
        if (last_error->empty()) *last_error = "connect timed out";
        continue;
      }
      int err = 0;
      socklen_t len = sizeof err;
      getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
      if (err != 0) {
        *last_error = absl::StrCat(PeerName(a->ai_addr, a->ai_addrlen), ": ", Errno(err));
        continue;
      }
      r = 0;
    }
    if (r != 0) {
      *last_error = absl::StrCat(PeerName(a->ai_addr, a->ai_addrlen), ": ", Errno(errno));
      continue;
    }
    return fd;
  }
  return Fd();
}

absl::Status Join(const TpEnv& env, std::array<uint8_t, 128>& id, Clock::time_point deadline,
                  absl::Duration timeout) {
  const std::string me =
      absl::StrCat("tensor-parallel bootstrap: rank ", env.rank, " of ", env.world_size);
  const std::string where = absl::StrCat("rank 0 at ", env.Address());
  addrinfo* owned = nullptr;
  absl::StatusOr<std::vector<addrinfo*>> addrs = Resolve(env, &owned);
  if (!addrs.ok()) return addrs.status();
  std::unique_ptr<addrinfo, decltype(&freeaddrinfo)> free_later(owned, &freeaddrinfo);
  std::string last_error;
  Fd fd;
  for (;;) {
    fd = TryConnect(*addrs, deadline, &last_error);
    if (fd.ok()) break;
    const int ms = RemainingMs(deadline);
    if (ms == 0) {
      return absl::DeadlineExceededError(
          absl::StrCat(me, ": could not reach ", where, " (from ", env.source, ") within ",
                       absl::FormatDuration(timeout), "; last error: ", last_error));
    }
    // Rank 0 may not listen yet: try again shortly.
    std::this_thread::sleep_for(std::chrono::milliseconds(std::min(ms, 50)));
  }
  const int one = 1;
  setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  uint8_t hello[kHelloBytes];
  Put32(hello, kMagic);
  Put32(hello + 4, kVersion);
  Put32(hello + 8, static_cast<uint32_t>(env.world_size));
  Put32(hello + 12, static_cast<uint32_t>(env.rank));
  if (absl::Status s = WriteAll(fd.get(), hello, sizeof hello, deadline,
                                absl::StrCat("sending the hello to ", where));
      !s.ok()) {
    return absl::Status(s.code(), absl::StrCat(me, ": ", s.message()));
  }
  uint8_t reply[kReplyBytes];
  size_t got = 0;
  absl::Status read = ReadAll(fd.get(), reply, sizeof reply, deadline,
                              absl::StrCat("waiting for the unique id from ", where), &got);
  if ((read.ok() || got >= 4) && Get32(reply) != kMagic) {
    return absl::FailedPreconditionError(absl::StrCat(
        me, ": ", where, " (from ", env.source,
        ") does not speak Vibrant's tensor-parallel bootstrap (another program on that port?)"));
  }
  if (!read.ok()) return absl::Status(read.code(), absl::StrCat(me, ": ", read.message()));
  const uint32_t version = Get32(reply + 4), world = Get32(reply + 8), verdict = Get32(reply + 12);
  if (version != kVersion) {
    return absl::FailedPreconditionError(
        absl::StrCat(me, ": ", where, " speaks bootstrap protocol ", version, ", this rank ",
                     kVersion, " (different Vibrant builds?)"));
  }
  if (verdict == kWorldSizeDiffers || world != static_cast<uint32_t>(env.world_size)) {
    return absl::FailedPreconditionError(
        absl::StrCat(me, ": ", where, " has world size ", world, ", this process ", env.world_size,
                     " (the processes disagree on the world size in ", env.source, ")"));
  }
  if (verdict == kRankOutOfRange) {
    return absl::FailedPreconditionError(
        absl::StrCat(me, ": ", where, " refused rank ", env.rank, " (out of range)"));
  }
  if (verdict == kRankTaken) {
    return absl::FailedPreconditionError(
        absl::StrCat(me, ": ", where, " already has a process with rank ", env.rank,
                     " (two processes were given the same rank in ", env.source, ")"));
  }
  if (verdict != kOk) {
    return absl::FailedPreconditionError(
        absl::StrCat(me, ": ", where, " refused this rank (verdict ", verdict, ")"));
  }
  std::memcpy(id.data(), reply + 16, id.size());
  return absl::OkStatus();
}

}  // namespace

std::string TpEnv::Address() const {
  if (host.find(':') != std::string::npos) return absl::StrCat("[", host, "]:", port);
  return absl::StrCat(host, ":", port);
}

absl::Status ParseHostPort(absl::string_view text, absl::string_view what, std::string* host,
                           int* port) {
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat(what, "='", text, "': ", why));
  };
  absl::string_view h, p;
  if (!text.empty() && text.front() == '[') {
    const size_t close = text.find(']');
    if (close == absl::string_view::npos) return bad("no ']' after the IPv6 address");
    h = text.substr(1, close - 1);
    if (close + 1 >= text.size() || text[close + 1] != ':') return bad("expected HOST:PORT");
    p = text.substr(close + 2);
  } else {
    const size_t colon = text.rfind(':');
    if (colon == absl::string_view::npos) return bad("expected HOST:PORT (no port)");
    h = text.substr(0, colon);
    p = text.substr(colon + 1);
    if (h.find(':') != absl::string_view::npos) {
      return bad("an IPv6 address needs brackets: [ADDRESS]:PORT");
    }
  }
  if (h.empty()) return bad("expected HOST:PORT (no host)");
  if (p.empty()) return bad("expected HOST:PORT (no port)");
  absl::StatusOr<int> port_or = ParsePort(what, p);
  if (!port_or.ok()) return port_or.status();
  *host = std::string(h);
  *port = *port_or;
  return absl::OkStatus();
}

absl::StatusOr<TpEnv> ParseTpEnv(const EnvLookup& lookup) {
  const auto rank_v = lookup("VIBRANT_TP_RANK");
  const auto world_v = lookup("VIBRANT_TP_WORLD_SIZE");
  const auto addr_v = lookup("VIBRANT_TP_ADDR");
  const auto local_v = lookup("VIBRANT_TP_LOCAL_RANK");
  const bool ours = rank_v || world_v;
  const auto t_rank = lookup("RANK");
  const auto t_world = lookup("WORLD_SIZE");
  const bool torchrun = !ours && (t_rank || t_world);
  TpEnv env;
  if (!ours && !torchrun) {
    if (addr_v || local_v) {
      return absl::InvalidArgumentError(absl::StrCat(
          addr_v ? "VIBRANT_TP_ADDR" : "VIBRANT_TP_LOCAL_RANK",
          " is set but VIBRANT_TP_RANK and VIBRANT_TP_WORLD_SIZE are not (nor torchrun's RANK "
          "and WORLD_SIZE)"));
    }
    env.source = "default";
    return env;
  }
  const char* rank_name = ours ? "VIBRANT_TP_RANK" : "RANK";
  const char* world_name = ours ? "VIBRANT_TP_WORLD_SIZE" : "WORLD_SIZE";
  const std::optional<std::string> rank_s = ours ? rank_v : t_rank;
  const std::optional<std::string> world_s = ours ? world_v : t_world;
  // VIBRANT_TP_LOCAL_RANK and VIBRANT_TP_ADDR also override torchrun's.
  const char* local_name = ours || local_v ? "VIBRANT_TP_LOCAL_RANK" : "LOCAL_RANK";
  const std::optional<std::string> local_s = ours || local_v ? local_v : lookup("LOCAL_RANK");
  env.source = ours ? "VIBRANT_TP_*" : "torchrun's RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT";
  const std::string set_names =
      ours ? "VIBRANT_TP_RANK or VIBRANT_TP_WORLD_SIZE" : "RANK or WORLD_SIZE";
  if (!world_s) {
    return absl::InvalidArgumentError(absl::StrCat(world_name, " is not set (", set_names,
                                                   " is; set it to the number of processes)"));
  }
  if (!rank_s) {
    return absl::InvalidArgumentError(
        absl::StrCat(rank_name, " is not set (", set_names, " is; set it to this process's rank)"));
  }
  absl::StatusOr<int> world = ParseCount(world_name, *world_s, kMaxTpWorldSize);
  if (!world.ok()) return world.status();
  if (*world < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(world_name, "='", *world_s, "': the world size must be at least 1"));
  }
  absl::StatusOr<int> rank = ParseCount(rank_name, *rank_s, kMaxTpWorldSize);
  if (!rank.ok()) return rank.status();
  if (*rank >= *world) {
    return absl::InvalidArgumentError(absl::StrCat(
        rank_name, "=", *rank, " is not below the world size ", world_name, "=", *world));
  }
  env.rank = *rank;
  env.world_size = *world;
  env.local_rank = env.rank;
  if (local_s) {
    absl::StatusOr<int> local = ParseCount(local_name, *local_s, kMaxTpWorldSize);
    if (!local.ok()) return local.status();
    env.local_rank = *local;
  }
  if (addr_v) {
    if (absl::Status s = ParseHostPort(*addr_v, "VIBRANT_TP_ADDR", &env.host, &env.port); !s.ok()) {
      return s;
    }
    if (torchrun) env.source = "torchrun's RANK and WORLD_SIZE, VIBRANT_TP_ADDR";
    return env;
  }
  if (ours) {
    if (env.world_size > 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("VIBRANT_TP_ADDR is not set; with VIBRANT_TP_WORLD_SIZE=", env.world_size,
                       " every process needs rank 0's HOST:PORT"));
    }
    return env;
  }
  const auto m_addr = lookup("MASTER_ADDR");
  const auto m_port = lookup("MASTER_PORT");
  if (env.world_size > 1 && !m_addr) {
    return absl::InvalidArgumentError(
        absl::StrCat("MASTER_ADDR is not set; with WORLD_SIZE=", env.world_size,
                     " every process needs rank 0's host (or set VIBRANT_TP_ADDR=HOST:PORT)"));
  }
  if (env.world_size > 1 && !m_port) {
    return absl::InvalidArgumentError(
        absl::StrCat("MASTER_PORT is not set; with WORLD_SIZE=", env.world_size,
                     " every process needs rank 0's port"));
  }
  if (m_addr && m_port) {
    std::string h = *m_addr;
    if (h.size() >= 2 && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
    if (h.empty()) return absl::InvalidArgumentError("MASTER_ADDR is set but empty");
    absl::StatusOr<int> port = ParsePort("MASTER_PORT", *m_port);
    if (!port.ok()) return port.status();
    env.host = h;
    env.port = *port;
    // torchrun's agent serves its own TCPStore on MASTER_PORT and tells the
    // workers so with TORCHELASTIC_USE_AGENT_STORE=True: rank 0 takes the
    // next port then.
    if (lookup("TORCHELASTIC_USE_AGENT_STORE") == std::optional<std::string>("True")) {
      if (env.port == 65535) {
        return absl::InvalidArgumentError(
            "MASTER_PORT=65535: torchrun's agent holds it (TORCHELASTIC_USE_AGENT_STORE=True) "
            "and rank 0 would listen on the next port, which does not exist; choose a lower "
            "MASTER_PORT or set VIBRANT_TP_ADDR=HOST:PORT");
      }
      env.port += 1;
      env.source = "torchrun's RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT + 1";
    }
  }
  return env;
}

absl::StatusOr<TpEnv> TpEnvFromEnvironment() {
  return ParseTpEnv([](absl::string_view name) -> std::optional<std::string> {
    const char* v = std::getenv(std::string(name).c_str());
    if (v == nullptr) return std::nullopt;
    return std::string(v);
  });
}

absl::Status ExchangeUniqueId(const TpEnv& env, std::array<uint8_t, 128>& id,
                              absl::Duration timeout) {
  if (env.world_size < 1 || env.rank < 0 || env.rank >= env.world_size) {
    return absl::InvalidArgumentError(absl::StrCat("tensor-parallel bootstrap: rank ", env.rank,
                                                   " outside a world of size ", env.world_size));
  }
  if (env.world_size == 1) return absl::OkStatus();
  if (env.host.empty() || env.port < 1 || env.port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor-parallel bootstrap: no valid address of rank 0 (host '", env.host,
                     "', port ", env.port, ") for a world of size ", env.world_size));
  }
  if (timeout < absl::ZeroDuration()) timeout = absl::ZeroDuration();
  const Clock::time_point deadline =
      Clock::now() + std::chrono::duration_cast<Clock::duration>(
                         absl::ToChronoNanoseconds(std::min(timeout, absl::Hours(24 * 365))));
  return env.rank == 0 ? Serve(env, id, deadline, timeout) : Join(env, id, deadline, timeout);
}

}  // namespace vibrant
