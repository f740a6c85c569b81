// systemd readiness (label fuse): psmfs started with $NOTIFY_SOCKET, as the
// psmfs@.service unit (Type=notify) starts it, says READY=1 once the volume
// is mounted and its control socket serves, and STOPPING=1 when it begins
// to unmount; nothing else.
#include <doctest/doctest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>

#include "tests/common/mount_fixture.h"

namespace {

std::string Receive(int fd, int timeout_s) {
  timeval tv{timeout_s, 0};
  REQUIRE(::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) == 0);
  char buf[4096];
  ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
  return n < 0 ? "<nothing>" : std::string(buf, static_cast<size_t>(n));
}

}  // namespace

TEST_CASE("sd_notify: READY=1 once mounted and serving, STOPPING=1 at unmount") {
  const std::string path = "/tmp/psm-notify-fuse-" + std::to_string(getpid());
  ::unlink(path.c_str());
  int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::memcpy(a.sun_path, path.data(), path.size());
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0);
  REQUIRE(::setenv("NOTIFY_SOCKET", path.c_str(), 1) == 0);

  auto mv = psm::test::MountedVolume::Create("256M");
  ::unsetenv("NOTIFY_SOCKET");
  REQUIRE(mv != nullptr);
  const std::string ready = Receive(fd, 60);
  CHECK(ready.rfind("READY=1\nSTATUS=serving ", 0) == 0);
  CHECK_MESSAGE(ready.find(" at " + mv->mnt) != std::string::npos, ready);
  // Ready means ready: the mount is there and the control socket answers.
  CHECK(psm::test::IsMountPoint(mv->mnt));
  auto st = psm::test::RunProgram({psm::test::BinDir() + "/psmctl", "status", mv->mnt}, 60);
  CHECK_MESSAGE(st.exit_code == 0, st.output);
  CHECK(Receive(fd, 1) == "<nothing>");  // READY once

  REQUIRE(mv->Unmount());
  CHECK(Receive(fd, 10) == "STOPPING=1");
  CHECK(Receive(fd, 1) == "<nothing>");
  ::close(fd);
  ::unlink(path.c_str());
}
