#include "frontends/io/file.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "frontends/io/text.h"

namespace vibrant::io {
namespace {

std::string ErrnoText(int err) { return std::strerror(err); }

absl::Status ErrnoStatus(int err, const std::string& msg) {
  return absl::Status(absl::ErrnoToStatusCode(err), msg);
}

// ---- the SIGBUS guard -------------------------------------------------------
//
// A fixed table of mapped ranges, read by the signal handler without locks:
// a slot is published by storing `end` last (release) and retired by clearing
// `end` first. The path is copied into the slot, truncated, so the handler
// never touches the heap.
constexpr int kGuardSlots = 64;
constexpr size_t kGuardPathBytes = 512;
struct GuardSlot {
  std::atomic<uintptr_t> begin{0};
  std::atomic<uintptr_t> end{0};
  std::atomic<bool> used{false};
  char path[kGuardPathBytes];
};
GuardSlot g_slots[kGuardSlots];
struct sigaction g_previous_sigbus;
std::once_flag g_install_once;

void WriteAll(const char* s, size_t n) {
  while (n > 0) {
    ssize_t w = ::write(STDERR_FILENO, s, n);
    if (w <= 0) {
      if (w < 0 && errno == EINTR) continue;
      return;
    }
    s += w;
    n -= static_cast<size_t>(w);
  }
}

void OnSigbus(int sig, siginfo_t* info, void* ucontext) {
  const uintptr_t addr = reinterpret_cast<uintptr_t>(info->si_addr);
  for (GuardSlot& slot : g_slots) {
    const uintptr_t end = slot.end.load(std::memory_order_acquire);
    if (end == 0) continue;
    const uintptr_t begin = slot.begin.load(std::memory_order_relaxed);
    if (addr < begin || addr >= end) continue;
    static const char kPrefix[] = "vibrant: ";
    static const char kSuffix[] =
        ": the file shrank while it was memory-mapped (truncated or rewritten by another "
        "process); its data is gone, stopping\n";
    WriteAll(kPrefix, sizeof(kPrefix) - 1);
    WriteAll(slot.path, ::strnlen(slot.path, kGuardPathBytes));
    WriteAll(kSuffix, sizeof(kSuffix) - 1);
    ::_exit(kMappedFileShrankExitCode);
  }
  // Not one of ours: hand it to whoever was there before (a sanitizer's
  // handler, say), or let the default action kill the process.
  if ((g_previous_sigbus.sa_flags & SA_SIGINFO) && g_previous_sigbus.sa_sigaction != nullptr) {
    g_previous_sigbus.sa_sigaction(sig, info, ucontext);
    return;
  }
  if (g_previous_sigbus.sa_handler != SIG_DFL && g_previous_sigbus.sa_handler != SIG_IGN &&
      g_previous_sigbus.sa_handler != nullptr) {
    g_previous_sigbus.sa_handler(sig);
    return;
  }
  ::signal(SIGBUS, SIG_DFL);  // the faulting access repeats and kills us
}

void InstallGuard() {
  struct sigaction sa;
  std::memset(&sa, 0, sizeof(sa));
  sa.sa_sigaction = OnSigbus;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGBUS, &sa, &g_previous_sigbus);
}

// Registers [p, p + n) under `path`; returns the slot, or -1 when the table is
// full (the mapping then stays unguarded: a truncation is a plain SIGBUS).
int RegisterMapping(const void* p, size_t n, const std::string& path) {
  if (n == 0) return -1;
  std::call_once(g_install_once, InstallGuard);
  for (int i = 0; i < kGuardSlots; ++i) {
    bool expected = false;
    if (!g_slots[i].used.compare_exchange_strong(expected, true)) continue;
    GuardSlot& slot = g_slots[i];
    const std::string shown = EscapeForTerminal(path);
    const size_t len = std::min(shown.size(), kGuardPathBytes - 1);
    std::memcpy(slot.path, shown.data(), len);
    slot.path[len] = '\0';
    slot.begin.store(reinterpret_cast<uintptr_t>(p), std::memory_order_relaxed);
    slot.end.store(reinterpret_cast<uintptr_t>(p) + n, std::memory_order_release);
    return i;
  }
  return -1;
}

void UnregisterMapping(int slot) {
  if (slot < 0) return;
  g_slots[slot].end.store(0, std::memory_order_release);
  g_slots[slot].begin.store(0, std::memory_order_relaxed);
  g_slots[slot].used.store(false, std::memory_order_release);
}

}  // namespace

UniqueFd& UniqueFd::operator=(UniqueFd&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = o.release();
  }
  return *this;
}

UniqueFd::~UniqueFd() {
  if (fd_ >= 0) ::close(fd_);
}

std::string FileKindName(mode_t mode) {
  if (S_ISREG(mode)) return "a regular file";
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISLNK(mode)) return "a symbolic link";
  return "not a regular file";
}

absl::StatusOr<UniqueFd> OpenForReading(const std::string& path, struct stat* st_out) {
  // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer.
  // O_NOCTTY: a terminal device must not become our controlling terminal.
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY));
  if (fd.get() < 0) {
    const int err = errno;
    return ErrnoStatus(err, absl::StrCat(path, ": cannot open: ", ErrnoText(err)));
  }
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) {
    const int err = errno;
    return ErrnoStatus(err, absl::StrCat(path, ": cannot stat: ", ErrnoText(err)));
  }
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": not a regular file (", FileKindName(st.st_mode), ")"));
  }
  // Regular files ignore O_NONBLOCK, but clear it so that nothing downstream
  // sees a surprising flag.
  const int flags = ::fcntl(fd.get(), F_GETFL);
  if (flags >= 0) ::fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK);
  if (st_out != nullptr) *st_out = st;
  return fd;
}

absl::StatusOr<std::string> ReadFile(const std::string& path, uint64_t max_bytes) {
  struct stat st;
  absl::StatusOr<UniqueFd> fd = OpenForReading(path, &st);
  if (!fd.ok()) return fd.status();
  if (static_cast<uint64_t>(st.st_size) > max_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", st.st_size,
                                                   " bytes, more than the limit of ", max_bytes));
  }
  std::string out;
  out.reserve(static_cast<size_t>(st.st_size));
  char buf[1 << 16];
  for (;;) {
    ssize_t n = ::read(fd->get(), buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      return ErrnoStatus(err, absl::StrCat(path, ": read failed: ", ErrnoText(err)));
    }
    if (n == 0) break;
    if (out.size() + static_cast<uint64_t>(n) > max_bytes) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": more than the limit of ", max_bytes, " bytes"));
    }
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

absl::StatusOr<std::string> ReadFileHead(const std::string& path, size_t n) {
  absl::StatusOr<UniqueFd> fd = OpenForReading(path);
  if (!fd.ok()) return fd.status();
  std::string out(n, '\0');
  size_t done = 0;
  while (done < n) {
    ssize_t r = ::read(fd->get(), out.data() + done, n - done);
    if (r < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      return ErrnoStatus(err, absl::StrCat(path, ": read failed: ", ErrnoText(err)));
    }
    if (r == 0) break;
    done += static_cast<size_t>(r);
  }
  out.resize(done);
  return out;
}

absl::StatusOr<std::unique_ptr<MappedFile>> MappedFile::Open(const std::string& path) {
  struct stat st;
  absl::StatusOr<UniqueFd> fd = OpenForReading(path, &st);
  if (!fd.ok()) return fd.status();
  std::unique_ptr<MappedFile> f(new MappedFile());
  f->path_ = path;
  f->dev_ = st.st_dev;
  f->ino_ = st.st_ino;
  const size_t size = static_cast<size_t>(st.st_size);
  if (size > 0) {
    void* map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd->get(), 0);
    if (map == MAP_FAILED) {
      const int err = errno;
      return ErrnoStatus(err, absl::StrCat(path, ": cannot mmap: ", ErrnoText(err)));
    }
    f->map_ = map;
    f->size_ = size;
    f->bytes_ = absl::Span<const uint8_t>(static_cast<const uint8_t*>(map), size);
    f->guard_slot_ = RegisterMapping(map, size, path);
  }
  return f;
}

MappedFile::~MappedFile() {
  UnregisterMapping(guard_slot_);
  if (map_ != nullptr) ::munmap(map_, size_);
}

absl::Status CheckOutputIsNotInput(const std::string& flag, const std::string& output,
                                   const std::vector<std::string>& inputs) {
  struct stat out;
  if (::stat(output.c_str(), &out) != 0) return absl::OkStatus();  // a new file
  for (const std::string& input : inputs) {
    struct stat in;
    if (::stat(input.c_str(), &in) != 0) continue;
    if (in.st_dev == out.st_dev && in.st_ino == out.st_ino) {
      return absl::InvalidArgumentError(absl::StrCat(
          flag, " ", output, ": is the input ", input,
          " (the same file); writing it would destroy the input: choose another output"));
    }
  }
  return absl::OkStatus();
}

}  // namespace vibrant::io
