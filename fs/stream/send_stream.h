// The send/receive stream format (docs/send-receive.md is the reference).
//
//   stream = record*            the first is HEADER, the last END
//   record = u16 type | u16 flags (0) | u32 length | u64 sequence
//            | payload[length] | u32 crc32c(type .. payload)
// All integers little-endian. Sequence numbers count from 0 with no gap, so
// a dropped, repeated or moved record is found; the CRC finds flipped bits;
// a stream without END is truncated. HEADER's payload is the magic
// "PSMFSSTR", u32 version, then a JSON object that describes the stream (what snapshot, from what base,
// the source volume, the block size, the exact size of the whole stream).
//
// This header is FUSE-free and RocksDB-free: the core's sender and receiver
// (fs/core/fs_send.cc), psmctl and the tests use it.
//
// Thread safety: StreamWriter and StreamReader are single-threaded objects.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "meta/status.h"

namespace psm::stream {

// STORED: the stream format version this code writes and reads.
inline constexpr uint32_t kVersion = 1;
// The first 8 bytes of HEADER's payload.
inline constexpr std::string_view kMagic = "PSMFSSTR";
inline constexpr size_t kRecordHeader = 16;  // type, flags, length, sequence
inline constexpr size_t kRecordTrailer = 4;  // crc32c
// Largest payload a reader accepts (a DATA record carries at most one chunk
// of the source volume, at most 64 MiB).
inline constexpr uint32_t kMaxPayload = 64u << 20;
// Payload bytes of one DATA record the sender emits at most.
inline constexpr uint32_t kMaxData = 1u << 20;

// STORED: record types.
enum class Type : uint16_t {
  kHeader = 1,    // magic, u32 version, JSON object
  kInode = 2,     // u64 ino, u32 mode, uid, gid, nlink, u64 size, rdev,
                  // i64 atime, mtime, ctime, btime (ns), u64 parent, symlink target
  kXattr = 3,     // u64 ino, u32 name length, name, value
  kXattrDel = 4,  // u64 ino, name
  kDentry = 5,    // u64 parent, u64 ino, u32 type (S_IFMT bits), name
  kUnlink = 6,    // u64 parent, name
  kData = 7,      // u64 ino, u64 offset, bytes (offset and length: whole blocks)
  kPunch = 8,     // u64 ino, u64 offset, u64 length (a hole from here)
  kDestroy = 9,   // u64 ino: the inode is gone (before any record that re-creates it)
  kEnd = 10,      // u64 records before END, u64 data bytes
};
const char* TypeName(Type t);

// Little-endian payload building and parsing.
void Put16(std::string* s, uint16_t v);
void Put32(std::string* s, uint32_t v);
void Put64(std::string* s, uint64_t v);
class Parser {
 public:
  explicit Parser(std::string_view p) : p_(p) {}
  bool U32(uint32_t* v);
  bool U64(uint64_t* v);
  bool I64(int64_t* v) {
    uint64_t u;
    if (!U64(&u)) return false;
    *v = static_cast<int64_t>(u);
    return true;
  }
  bool Bytes(size_t n, std::string_view* out);
  std::string_view Rest() {
    std::string_view r = p_;
    p_ = {};
    return r;
  }

 private:
  std::string_view p_;
};

// Writes records to a sink, numbering them. With a null sink it only counts
// (the sender's sizing pass).
class StreamWriter {
 public:
  using Sink = std::function<Status(std::string_view)>;
  explicit StreamWriter(Sink sink, size_t buffer_bytes = 4u << 20)
      : sink_(std::move(sink)), limit_(buffer_bytes) {}
  // Appends one record; `head` and `tail` are concatenated as the payload
  // (a DATA record's fixed fields and its bytes, without a copy into head).
  Status Add(Type t, std::string_view head, std::string_view tail = {});
  // Writes END and flushes.
  Status Finish(uint64_t data_bytes);
  uint64_t bytes() const { return bytes_; }
  uint64_t records() const { return seq_; }

 private:
  Status Flush();
  Sink sink_;
  size_t limit_;
  std::string buf_;
  uint64_t seq_ = 0;
  uint64_t bytes_ = 0;
};

// One record as read (payload valid until the next Next()).
struct Record {
  Type type = Type::kEnd;
  uint64_t seq = 0;
  std::string_view payload;
};

// Reads and verifies records from a source (returns bytes read, 0 at EOF).
// Every error names the record and the byte offset where it was found.
class StreamReader {
 public:
  using Source = std::function<Result<size_t>(char*, size_t)>;
  explicit StreamReader(Source src) : src_(std::move(src)) {}
  // The next record, verified (CRC, sequence, length). kCorruption for a
  // damaged or reordered stream, kInvalid for something that is not a
  // stream, kIOError("truncated ...") when the input ends early. After END
  // the input must end.
  Status Next(Record* out);
  uint64_t bytes() const { return offset_; }

 private:
  Status Fill(size_t n, bool* eof);
  Source src_;
  std::string buf_;
  size_t pos_ = 0;
  uint64_t offset_ = 0;  // stream bytes consumed
  uint64_t seq_ = 0;
  bool ended_ = false;
};

}  // namespace psm::stream
