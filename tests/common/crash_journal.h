// What the crash test (tests/integration/crash_test.cc) writes and checks.
//
// Pattern: every file is named by a numeric id and holds, at every 8-byte
// aligned offset `off`, the word PatternWord(id, off / 8); no word is zero
// and no two (file, offset) pairs share a word, so a byte that belongs to
// another file, or to another place in this file, is always detected.
//
// Journal: a native file outside the mount, appended to by the workload and
// fdatasync'ed after every record, so that it survives the daemon's death:
//   "S <id> <len> <dir>"  fsync of file <id> (in directory <dir>) returned 0
//                         when the file held <len> pattern bytes;
//   "M <id> <from> <to>"  about to rename <id> from directory <from> to <to>
//                         (after a crash it may be in either);
//   "D <id>"              about to unlink <id> (after a crash it may be gone).
// Records are written before a rename/unlink and after an fsync, so the
// journal never promises more than the file system had to keep: only a
// file with an "S" record must exist after a crash.
#pragma once

#include <cstdint>
#include <map>
#include <string>

namespace psm::testutil {

inline uint64_t PatternWord(uint64_t id, uint64_t word_index) {
  return 0x8000000000000000ull | (id << 36) | (word_index & 0xfffffffffull);
}
// Fills buf[0, len) with the pattern of file `id` starting at byte `off`
// (both multiples of 8).
void FillPattern(uint64_t id, uint64_t off, char* buf, size_t len);

struct JournalFile {
  bool synced = false;      // an "S" record exists: the file must exist
  uint64_t synced_len = 0;  // the largest <len> of an "S" record
  int dir = -1;             // directory at the last "S"/"M" record
  int alt_dir = -1;         // the other directory while a rename may be pending
  bool deleted = false;     // "D" seen: may be gone
};
// Parses a journal; ignores a torn last line.
std::map<uint64_t, JournalFile> ParseJournal(const std::string& text);

// Checks the file at `path` named `id`: every word is the pattern or zero,
// and the first `min_len` bytes are exactly the pattern. Returns "" when the
// file is fine, else what is wrong.
std::string VerifyPatternFile(const std::string& path, uint64_t id, uint64_t min_len);

}  // namespace psm::testutil
