// How the processes of a tensor-parallel run find each other: one process per
// GPU, as torchrun and MPI launch them, each told its rank, the world size and
// rank 0's address through the environment. Rank 0 makes NCCL's unique id
// (runtime/cuda/nccl.h) and serves it over TCP to the other ranks; with the id
// every rank joins the same NCCL communicator, whose own transports (NVLink,
// PCIe, or the network between hosts) then carry the collectives.
//
// Environment (Vibrant's names win; torchrun's rank and world size are read
// only when neither VIBRANT_TP_RANK nor VIBRANT_TP_WORLD_SIZE is set):
//   VIBRANT_TP_RANK        this process's rank, 0 .. world-1   (torchrun: RANK)
//   VIBRANT_TP_WORLD_SIZE  the number of processes              (torchrun: WORLD_SIZE)
//   VIBRANT_TP_ADDR        HOST:PORT where rank 0 listens       (torchrun: MASTER_ADDR and
//                          ([v6]:PORT for an IPv6 literal)        MASTER_PORT, or MASTER_PORT + 1
//                                                                 when TORCHELASTIC_USE_AGENT_STORE
//                                                                 =True: torchrun's agent holds
//                                                                 MASTER_PORT then)
//   VIBRANT_TP_LOCAL_RANK  this process's GPU on its host       (torchrun: LOCAL_RANK);
//                          optional, default: the rank
// VIBRANT_TP_ADDR and VIBRANT_TP_LOCAL_RANK override torchrun's values too.
// None set: a single process (rank 0 of 1). The address is required when the
// world size is above 1.
//
// Plain C++ and POSIX sockets: no CUDA here.
#ifndef VIBRANT_RUNTIME_TP_BOOTSTRAP_H_
#define VIBRANT_RUNTIME_TP_BOOTSTRAP_H_

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace vibrant {

// The most processes one run may have (a sanity bound on the environment).
inline constexpr int kMaxTpWorldSize = 65536;

struct TpEnv {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;  // the GPU this process drives on its host
  std::string host;    // rank 0's host name or address; empty when world_size == 1 and unset
  int port = 0;        // rank 0's port (1 .. 65535); 0 when host is empty
  // Where the values came from, for messages: "VIBRANT_TP_*", "torchrun
  // (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT)" or "default".
  std::string source;

  // "host:port" ("[v6]:port" for an IPv6 literal).
  std::string Address() const;
};

// Looks a variable up; nullopt when unset.
using EnvLookup = std::function<std::optional<std::string>(absl::string_view name)>;

// Reads and checks the variables above through `lookup`. InvalidArgument
// naming the variable and its value for anything malformed: a non-numeric or
// out-of-range number, rank >= world size, a port outside 1 .. 65535, an
// address without a port, a missing address when the world size is above 1,
// Vibrant's variables set only in part.
absl::StatusOr<TpEnv> ParseTpEnv(const EnvLookup& lookup);
// ParseTpEnv over this process's environment (getenv).
absl::StatusOr<TpEnv> TpEnvFromEnvironment();

// Splits "host:port" / "[v6]:port"; `what` names the variable in errors.
absl::Status ParseHostPort(absl::string_view text, absl::string_view what, std::string* host,
                           int* port);

// Hands rank 0's `id` to every rank. Rank 0 listens on env.port (all
// interfaces of env.host's address family) and sends `id` to each of the
// world_size - 1 other ranks as they connect; the others connect to
// env.Address(), retrying while nobody listens, and overwrite `id` with rank
// 0's. With world_size 1 it returns at once. Every step is bounded by
// `timeout` in all (name lookup aside: getaddrinfo of a host name may block on
// DNS). Errors:
//   DeadlineExceeded  rank 0 not reachable, or not every rank connected in time
//                     (rank 0's message lists the missing ranks);
//   FailedPrecondition  a peer with another world size or protocol, two peers
//                     claiming one rank, a stray connection (not this protocol),
//                     rank 0 refusing this rank;
//   Unavailable       rank 0 cannot listen (port in use) or a socket error.
// A small framed protocol (tp_bootstrap.cc): each message starts with a magic
// and the protocol version, and carries the sender's world size.
absl::Status ExchangeUniqueId(const TpEnv& env, std::array<uint8_t, 128>& id,
                              absl::Duration timeout);

}  // namespace vibrant

#endif  // VIBRANT_RUNTIME_TP_BOOTSTRAP_H_
