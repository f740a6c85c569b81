// Small file helpers shared by the integration tests that drive a mount
// with ordinary system calls and the real psmctl (snapshot_fuse_test,
// restore_fuse_test). Header-only: they use doctest assertions.
#pragma once

#include <doctest/doctest.h>
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "fs/json/control_json.h"
#include "tests/common/mount_fixture.h"

namespace psm::testutil {

// $PSMFS_BIN_DIR/psmctl ARGS..., 300 s at most.
inline psm::test::ProgramResult Ctl(std::vector<std::string> args) {
  args.insert(args.begin(), psm::test::BinDir() + "/psmctl");
  return psm::test::RunProgram(args, 300);
}

// The "stats" object of `psmctl status MNT --json`.
inline psm::Json StatusStats(const std::string& mnt) {
  auto r = Ctl({"status", mnt, "--json"});
  REQUIRE_MESSAGE(r.ok(), r.output);
  auto j = psm::Json::Parse(r.output);
  REQUIRE_MESSAGE(j.ok(), r.output);
  const psm::Json* stats = j.value().Find("stats");
  REQUIRE_MESSAGE(stats != nullptr, r.output);
  return *stats;
}

// n pseudo-random bytes (xorshift), different for every seed.
inline std::string Pattern(size_t n, unsigned seed) {
  std::string s(n, '\0');
  uint32_t x = seed * 2654435761u + 7;
  for (auto& c : s) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    c = static_cast<char>(x);
  }
  return s;
}

// Writes `data` at `off` (creating the file; truncating it first if `trunc`).
inline void WriteFile(const std::string& p, const std::string& data, off_t off = 0,
                      bool trunc = true) {
  int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | (trunc ? O_TRUNC : 0), 0644);
  REQUIRE_MESSAGE(fd >= 0, p << ": " << strerror(errno));
  REQUIRE(::pwrite(fd, data.data(), data.size(), off) == static_cast<ssize_t>(data.size()));
  REQUIRE(::close(fd) == 0);
}

// The whole file, or "<strerror>" when it cannot be opened.
inline std::string ReadFile(const std::string& p) {
  int fd = ::open(p.c_str(), O_RDONLY);
  if (fd < 0) return "<" + std::string(strerror(errno)) + ">";
  std::string out;
  char buf[1 << 16];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof buf)) > 0) out.append(buf, n);
  ::close(fd);
  return out;
}

}  // namespace psm::testutil
