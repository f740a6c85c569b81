// psm::SdNotify (fs/daemon/sd_notify.h) speaks sd_notify(3)'s protocol: one
// datagram with the state to $NOTIFY_SOCKET, a path or an abstract socket
// ('@'); nothing and false without the variable or a listener.
#include "fs/daemon/sd_notify.h"

#include <doctest/doctest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

// A datagram socket bound to `name` ('@' first: abstract), and NOTIFY_SOCKET
// naming it for as long as it lives.
struct Listener {
  int fd = -1;
  std::string path;
  explicit Listener(const std::string& name) : path(name) {
    fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd >= 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::memcpy(a.sun_path, name.data(), name.size());
    if (name[0] == '@') a.sun_path[0] = '\0';
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a),
                   static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name.size())) == 0);
    timeval tv{5, 0};
    REQUIRE(::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) == 0);
    REQUIRE(::setenv("NOTIFY_SOCKET", name.c_str(), 1) == 0);
  }
  ~Listener() {
    ::close(fd);
    if (path[0] != '@') ::unlink(path.c_str());
    ::unsetenv("NOTIFY_SOCKET");
  }
  std::string Receive() {
    char buf[4096];
    ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    return n < 0 ? "<nothing: " + std::string(std::strerror(errno)) + ">" : std::string(buf, n);
  }
};

}  // namespace

TEST_CASE("sd_notify: without NOTIFY_SOCKET nothing is sent and the answer is false") {
  ::unsetenv("NOTIFY_SOCKET");
  CHECK_FALSE(psm::SdNotify("READY=1"));
}

TEST_CASE("sd_notify: a socket path receives the state as one datagram") {
  Listener l("/tmp/psm-notify-" + std::to_string(getpid()));
  CHECK(psm::SdNotify("READY=1\nSTATUS=serving /v at /m"));
  CHECK(l.Receive() == "READY=1\nSTATUS=serving /v at /m");
  CHECK(psm::SdNotify("STOPPING=1"));
  CHECK(l.Receive() == "STOPPING=1");
  // The variable stays for the next notification.
  REQUIRE(std::getenv("NOTIFY_SOCKET") != nullptr);
  CHECK(std::string(std::getenv("NOTIFY_SOCKET")) == l.path);
}

TEST_CASE("sd_notify: an abstract socket ('@name')") {
  Listener l("@psm-notify-" + std::to_string(getpid()));
  CHECK(psm::SdNotify("READY=1"));
  CHECK(l.Receive() == "READY=1");
}

TEST_CASE("sd_notify: nobody listening is false, not an error that stops anything") {
  const std::string path = "/tmp/psm-notify-none-" + std::to_string(getpid());
  REQUIRE(::setenv("NOTIFY_SOCKET", path.c_str(), 1) == 0);
  CHECK_FALSE(psm::SdNotify("READY=1"));
  ::unsetenv("NOTIFY_SOCKET");
}
