// A backup program on the psmfs client library: snapshots a mounted volume
// and writes the snapshot's stream (incremental from BASE when given) to a
// file, as `psmctl snapshot create` + `psmctl send` would.
//
//   g++ -O2 backup_client.cc $(pkg-config --cflags --libs psmfs-client) -o backup_client
//   ./backup_client /srv/data nightly-2024-05-07 /backup/nightly.psmfs [BASE]
//
// One psm::Client per volume; every method may be called from many threads.
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <string>

#include "cli/client.h"

int main(int argc, char** argv) {
  if (argc < 4 || argc > 5) {
    std::fprintf(stderr, "usage: %s MOUNTPOINT SNAPSHOT OUTFILE [BASE]\n", argv[0]);
    return 2;
  }
  const std::string mnt = argv[1], snap = argv[2], out = argv[3], base = argc == 5 ? argv[4] : "";
  auto client = psm::Client::Connect(mnt);
  if (!client.ok()) {
    std::fprintf(stderr, "%s\n", client.status().ToString().c_str());
    return 1;
  }
  // What the kernel still caches goes to the daemon first.
  int dfd = ::open(mnt.c_str(), O_RDONLY | O_DIRECTORY);
  if (dfd >= 0) {
    ::syncfs(dfd);
    ::close(dfd);
  }
  auto s = (*client)->CreateSnapshot(snap);
  if (!s.ok()) {
    std::fprintf(stderr, "snapshot: %s\n", s.status().ToString().c_str());
    return 1;
  }
  int fd = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd < 0) {
    std::perror(out.c_str());
    return 1;
  }
  auto sent = (*client)->Send(snap, base, [&](std::string_view piece) {
    while (!piece.empty()) {
      ssize_t w = ::write(fd, piece.data(), piece.size());
      if (w < 0) return psm::Status::FromErrno(errno, "write " + out);
      piece.remove_prefix(static_cast<size_t>(w));
    }
    return psm::Status::Ok();
  });
  if (::fsync(fd) != 0 || ::close(fd) != 0 || !sent.ok()) {
    std::fprintf(stderr, "send: %s\n", sent.ok() ? "fsync/close failed" : sent.status().ToString().c_str());
    return 1;
  }
  std::printf("%s: %llu bytes, %llu inodes\n", snap.c_str(),
              static_cast<unsigned long long>(sent->bytes),
              static_cast<unsigned long long>(sent->inodes));
  return 0;
}
