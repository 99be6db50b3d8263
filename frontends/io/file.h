// Opening untrusted files safely: the checks every tool and loader shares.
//
// - OpenForReading never blocks: the file is opened with O_NONBLOCK and
//   anything that is not a regular file (a FIFO, a directory, a device, a
//   socket) is refused before a byte is read, so `vibrantc inspect FIFO` is an
//   error, not a hang.
// - MappedFile maps a regular file read-only and registers the mapping with a
//   process-wide SIGBUS guard: if another process truncates the file while it
//   is mapped, the access that faults ends the process with a message naming
//   the file and exit status 1 (kMappedFileShrankExitCode), instead of dying of
//   SIGBUS. Why a handler and not a check: any check of the size before use
//   races with the truncation (kernels on several threads read weights for the
//   whole step), copying the file costs its size in memory, and MAP_POPULATE
//   does not help (truncation drops the pages). The data is gone at that
//   point, so exiting with a named error is all that is left to do.
// - CheckOutputIsNotInput compares files by device and inode (so a symlink
//   or a hard link to an input counts as that input), so that
//   `vibrantc compile M.gguf -o M.gguf` is refused instead of renaming the
//   plan over the model.
#ifndef VIBRANT_FRONTENDS_IO_FILE_H_
#define VIBRANT_FRONTENDS_IO_FILE_H_

#include <sys/stat.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace vibrant::io {

// An owned file descriptor, closed on destruction.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& o) noexcept : fd_(o.release()) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept;
  ~UniqueFd();
  int get() const { return fd_; }
  int release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }

 private:
  int fd_ = -1;
};

// "a FIFO", "a directory", "a character device", ... for errors.
std::string FileKindName(mode_t mode);

// Opens `path` for reading if it is a regular file (symlinks are followed);
// `st` receives its stat. Never blocks, whatever `path` is. Errors:
// "PATH: cannot open: No such file or directory" (NotFound),
// "PATH: not a regular file (a FIFO)" (InvalidArgument).
absl::StatusOr<UniqueFd> OpenForReading(const std::string& path, struct stat* st = nullptr);

// The whole of a regular file of at most `max_bytes` bytes.
absl::StatusOr<std::string> ReadFile(const std::string& path, uint64_t max_bytes = uint64_t{1} << 30);

// The first `n` bytes of a regular file (fewer when it is shorter): to sniff
// a magic number.
absl::StatusOr<std::string> ReadFileHead(const std::string& path, size_t n);

// The exit status of a process whose mapped file shrank under it.
inline constexpr int kMappedFileShrankExitCode = 1;

// A regular file mapped read-only (MAP_PRIVATE) and guarded against
// truncation (see the top of this file). An empty file maps to an empty span.
class MappedFile {
 public:
  static absl::StatusOr<std::unique_ptr<MappedFile>> Open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::string& path() const { return path_; }
  absl::Span<const uint8_t> bytes() const { return bytes_; }
  // The file's device and inode when it was opened.
  dev_t device() const { return dev_; }
  ino_t inode() const { return ino_; }

 private:
  MappedFile() = default;
  std::string path_;
  void* map_ = nullptr;
  size_t size_ = 0;
  absl::Span<const uint8_t> bytes_;
  dev_t dev_ = 0;
  ino_t ino_ = 0;
  int guard_slot_ = -1;
};

// Fails when `output` names the same file as one of `inputs` (same device
// and inode once symlinks are resolved; an output that does not exist yet
// names no input). `flag` is how the tool's user gave the output ("-o"):
// "-o M.gguf: is the input model M.gguf; writing it would destroy the input".
absl::Status CheckOutputIsNotInput(const std::string& flag, const std::string& output,
                                   const std::vector<std::string>& inputs);

}  // namespace vibrant::io

#endif  // VIBRANT_FRONTENDS_IO_FILE_H_
