#include "tests/common/crash_journal.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <sstream>
#include <vector>

namespace psm::testutil {

void FillPattern(uint64_t id, uint64_t off, char* buf, size_t len) {
  for (size_t i = 0; i + 8 <= len; i += 8) {
    uint64_t w = PatternWord(id, (off + i) / 8);
    std::memcpy(buf + i, &w, 8);
  }
}

std::map<uint64_t, JournalFile> ParseJournal(const std::string& text) {
  std::map<uint64_t, JournalFile> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (in.eof()) break;  // no newline: torn record
    std::istringstream ls(line);
    char kind = 0;
    uint64_t id = 0;
    ls >> kind >> id;
    if (!ls) continue;
    JournalFile& f = out[id];
    if (kind == 'S') {
      uint64_t len = 0;
      int dir = -1;
      ls >> len >> dir;
      f.synced = true;
      if (len > f.synced_len) f.synced_len = len;
      f.dir = dir;
      f.alt_dir = -1;
    } else if (kind == 'M') {
      int from = -1, to = -1;
      ls >> from >> to;
      f.dir = to;
      f.alt_dir = from;
    } else if (kind == 'D') {
      f.deleted = true;
    }
  }
  return out;
}

std::string VerifyPatternFile(const std::string& path, uint64_t id, uint64_t min_len) {
  int fd = open(path.c_str(), O_RDONLY);
  if (fd < 0) return path + ": open: " + std::strerror(errno);
  struct stat st;
  fstat(fd, &st);
  std::string err;
  if (static_cast<uint64_t>(st.st_size) < min_len) {
    err = path + ": size " + std::to_string(st.st_size) + " < fsynced " + std::to_string(min_len);
  }
  std::vector<char> buf(1 << 20);
  uint64_t off = 0;
  while (err.empty()) {
    ssize_t n = pread(fd, buf.data(), buf.size(), static_cast<off_t>(off));
    if (n < 0) {
      err = path + ": read at " + std::to_string(off) + ": " + std::strerror(errno);
      break;
    }
    if (n == 0) break;
    for (ssize_t i = 0; i < n; i += 8) {
      uint64_t w = 0;
      std::memcpy(&w, buf.data() + i, std::min<ssize_t>(8, n - i));
      uint64_t pos = off + i;
      uint64_t want = PatternWord(id, pos / 8);
      if (n - i < 8) {  // a partial last word: compare its prefix
        uint64_t mask = (1ull << (8 * (n - i))) - 1;
        want &= mask;
      }
      if (w == want) continue;
      if (w == 0 && pos >= min_len) continue;  // not fsynced: may read as zeros
      std::ostringstream os;
      os << path << ": word at " << pos << " is 0x" << std::hex << w << " (want 0x" << want;
      if (w >> 63) os << "; it belongs to file " << std::dec << ((w >> 36) & 0x7ffffff);
      os << ")" << std::dec << (pos < min_len ? " inside the fsynced range" : "");
      err = os.str();
      break;
    }
    off += n;
  }
  close(fd);
  return err;
}

}  // namespace psm::testutil
