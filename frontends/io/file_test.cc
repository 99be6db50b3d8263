#include "frontends/io/file.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "gtest/gtest.h"

#if defined(__SANITIZE_ADDRESS__)
#define VIBRANT_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define VIBRANT_ASAN 1
#endif
#endif

namespace vibrant::io {
namespace {

std::string TempDir() {
  const std::string dir = ::testing::TempDir() + "/vibrant_io_" + std::to_string(::getpid());
  std::filesystem::create_directories(dir);
  return dir;
}

void WriteBytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
}

TEST(OpenForReading, RegularFile) {
  const std::string path = TempDir() + "/regular";
  WriteBytes(path, "hello");
  struct stat st;
  absl::StatusOr<UniqueFd> fd = OpenForReading(path, &st);
  ASSERT_TRUE(fd.ok()) << fd.status();
  EXPECT_EQ(st.st_size, 5);
  char buf[8];
  EXPECT_EQ(::read(fd->get(), buf, sizeof(buf)), 5);
  EXPECT_EQ(ReadFile(path).value_or(""), "hello");
}

TEST(OpenForReading, MissingFile) {
  absl::StatusOr<UniqueFd> fd = OpenForReading(TempDir() + "/missing");
  EXPECT_EQ(fd.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(fd.status().message().find("cannot open"), std::string::npos);
}

// A FIFO with no writer: a plain open() for reading waits forever. The child
// process gets 10 seconds (SIGALRM kills it otherwise, and the test fails).
TEST(OpenForReadingDeathTest, FifoIsRefusedWithoutBlocking) {
  const std::string path = TempDir() + "/fifo";
  ::unlink(path.c_str());
  ASSERT_EQ(::mkfifo(path.c_str(), 0600), 0);
  EXPECT_EXIT(
      {
        ::alarm(10);
        absl::StatusOr<UniqueFd> fd = OpenForReading(path);
        absl::StatusOr<std::string> text = ReadFile(path);
        const bool ok = !fd.ok() && !text.ok() &&
                        fd.status().code() == absl::StatusCode::kInvalidArgument &&
                        fd.status().message() == path + ": not a regular file (a FIFO)";
        std::exit(ok ? 0 : 3);
      },
      ::testing::ExitedWithCode(0), "");
  ::unlink(path.c_str());
}

TEST(OpenForReading, DirectoryAndDevicesAreRefused) {
  absl::StatusOr<UniqueFd> dir = OpenForReading(TempDir());
  EXPECT_EQ(dir.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(dir.status().message().find("not a regular file (a directory)"), std::string::npos)
      << dir.status();
  absl::StatusOr<UniqueFd> dev = OpenForReading("/dev/zero");
  EXPECT_NE(dev.status().message().find("not a regular file (a character device)"),
            std::string::npos)
      << dev.status();
}

TEST(ReadFile, SizeLimit) {
  const std::string path = TempDir() + "/big";
  WriteBytes(path, std::string(100, 'x'));
  EXPECT_TRUE(ReadFile(path, 100).ok());
  absl::StatusOr<std::string> r = ReadFile(path, 99);
  EXPECT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("more than the limit of 99"), std::string::npos);
}

TEST(MappedFile, MapsTheBytes) {
  const std::string path = TempDir() + "/mapped";
  WriteBytes(path, "abcdef");
  absl::StatusOr<std::unique_ptr<MappedFile>> m = MappedFile::Open(path);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(std::string(reinterpret_cast<const char*>((*m)->bytes().data()), 6), "abcdef");
  WriteBytes(path + ".empty", "");
  absl::StatusOr<std::unique_ptr<MappedFile>> e = MappedFile::Open(path + ".empty");
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_TRUE((*e)->bytes().empty());
}

// A mapped file truncated by someone else: reading past the new end would
// raise SIGBUS. The guard turns it into a named error and exit status 1.
TEST(MappedFileDeathTest, ShrinkingFileIsACleanError) {
  const std::string path = TempDir() + "/shrinks";
  WriteBytes(path, std::string(1 << 20, 'w'));
  EXPECT_EXIT(
      {
        absl::StatusOr<std::unique_ptr<MappedFile>> m = MappedFile::Open(path);
        if (!m.ok()) std::exit(4);
        if (::truncate(path.c_str(), 4096) != 0) std::exit(5);
        volatile uint8_t sink = (*m)->bytes()[512 * 1024];
        (void)sink;
        std::exit(6);
      },
      ::testing::ExitedWithCode(kMappedFileShrankExitCode),
      "shrinks: the file shrank while it was memory-mapped");
}

// A fault outside every guarded mapping is still a SIGBUS (the guard does
// not swallow other bugs).
TEST(MappedFileDeathTest, OtherFaultsStillKill) {
  const std::string path = TempDir() + "/guarded";
  WriteBytes(path, std::string(8192, 'g'));
  const std::string other = TempDir() + "/unguarded";
  WriteBytes(other, std::string(1 << 20, 'u'));
  EXPECT_EXIT(
      {
        absl::StatusOr<std::unique_ptr<MappedFile>> m = MappedFile::Open(path);  // installs the guard
        if (!m.ok()) std::exit(4);
        int fd = ::open(other.c_str(), O_RDONLY);
        void* p = ::mmap(nullptr, 1 << 20, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED || ::truncate(other.c_str(), 4096) != 0) std::exit(5);
        volatile uint8_t sink = static_cast<const uint8_t*>(p)[512 * 1024];
        (void)sink;
        std::exit(6);
      },
#ifdef VIBRANT_ASAN
      // AddressSanitizer's own SIGBUS handler, which ours hands the fault to.
      ::testing::ExitedWithCode(1), "AddressSanitizer: BUS");
#else
      ::testing::KilledBySignal(SIGBUS), "");
#endif
}

TEST(CheckOutputIsNotInput, SameFileByAnyName) {
  const std::string dir = TempDir();
  const std::string model = dir + "/m.gguf";
  WriteBytes(model, "GGUF");
  const std::string link = dir + "/link.gguf";
  const std::string hard = dir + "/hard.gguf";
  ::unlink(link.c_str());
  ::unlink(hard.c_str());
  ASSERT_EQ(::symlink(model.c_str(), link.c_str()), 0);
  ASSERT_EQ(::link(model.c_str(), hard.c_str()), 0);
  for (const std::string& out : {model, link, hard, dir + "/./m.gguf"}) {
    absl::Status s = CheckOutputIsNotInput("-o", out, {model});
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << out;
    EXPECT_NE(s.message().find("would destroy the input"), std::string::npos) << s;
  }
  EXPECT_TRUE(CheckOutputIsNotInput("-o", dir + "/plan.bin", {model}).ok());
  WriteBytes(dir + "/other", "x");
  EXPECT_TRUE(CheckOutputIsNotInput("-o", dir + "/other", {model}).ok());
}

}  // namespace
}  // namespace vibrant::io
