// Changing a block of a volume's image behind psmfs's back, as a bad sector
// or a stray dd would, for the checksum and scrub tests. The block is found
// by searching the image for bytes the test wrote, never by asking psmfs
// where it is. Header-only: uses doctest assertions.
#pragma once

#include <doctest/doctest.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <string_view>

namespace psm::testutil {

// The whole of a file (an image, a mirror), and n bytes of it at `off`.
inline std::string FileBytes(const std::string& path) {
  // One read(2) per MiB, not a character at a time: images are tens of MiB
  // and the sanitizer builds are unoptimised.
  std::string out;
  int fd = ::open(path.c_str(), O_RDONLY);
  REQUIRE_MESSAGE(fd >= 0, path);
  char buf[1 << 20];
  for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;) out.append(buf, static_cast<size_t>(n));
  ::close(fd);
  return out;
}
inline std::string BytesAt(const std::string& path, uint64_t off, size_t n) {
  std::string s(n, '\0');
  int fd = ::open(path.c_str(), O_RDONLY);
  REQUIRE(fd >= 0);
  REQUIRE(::pread(fd, s.data(), n, static_cast<off_t>(off)) == static_cast<ssize_t>(n));
  ::close(fd);
  return s;
}

// Changes byte `at` of the one copy of `block` (its size is the block size)
// in `image`, at a multiple of the block size, by XOR with `mask`, and
// returns the copy's offset. Fails the test unless there is exactly one
// copy. Flipping the changed block again restores it.
inline uint64_t FlipInImage(const std::string& image, std::string_view block, size_t at,
                            unsigned char mask = 0xff) {
  const size_t bs = block.size();
  REQUIRE(bs > 0);
  REQUIRE(at < bs);
  const std::string bytes = FileBytes(image);
  uint64_t found = 0;
  int copies = 0;
  for (size_t o = 0; o + bs <= bytes.size(); o += bs) {
    if (std::memcmp(bytes.data() + o, block.data(), bs) == 0) {
      found = o;
      ++copies;
    }
  }
  REQUIRE_MESSAGE(copies == 1, "the block is in " << image << " " << copies << " times");
  int fd = ::open(image.c_str(), O_WRONLY);
  REQUIRE(fd >= 0);
  const char c = static_cast<char>(static_cast<unsigned char>(block[at]) ^ mask);
  REQUIRE(::pwrite(fd, &c, 1, static_cast<off_t>(found + at)) == 1);
  REQUIRE(::fsync(fd) == 0);
  ::close(fd);
  return found;
}

}  // namespace psm::testutil
