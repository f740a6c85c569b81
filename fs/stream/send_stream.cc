#include "fs/stream/send_stream.h"

#include <cstring>

#include "fs/base/crc32c.h"

namespace psm::stream {
namespace {

uint16_t Le16(const char* p) {
  return static_cast<uint16_t>(static_cast<unsigned char>(p[0]) |
                               (static_cast<unsigned char>(p[1]) << 8));
}
uint32_t Le32(const char* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}
uint64_t Le64(const char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

}  // namespace

const char* TypeName(Type t) {
  switch (t) {
    case Type::kHeader: return "HEADER";
    case Type::kInode: return "INODE";
    case Type::kXattr: return "XATTR";
    case Type::kXattrDel: return "XATTR_DEL";
    case Type::kDentry: return "DENTRY";
    case Type::kUnlink: return "UNLINK";
    case Type::kData: return "DATA";
    case Type::kPunch: return "PUNCH";
    case Type::kDestroy: return "DESTROY";
    case Type::kEnd: return "END";
  }
  return "unknown";
}

void Put16(std::string* s, uint16_t v) {
  s->push_back(static_cast<char>(v & 0xff));
  s->push_back(static_cast<char>(v >> 8));
}
void Put32(std::string* s, uint32_t v) {
  for (int i = 0; i < 4; ++i) s->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
void Put64(std::string* s, uint64_t v) {
  for (int i = 0; i < 8; ++i) s->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

bool Parser::U32(uint32_t* v) {
  if (p_.size() < 4) return false;
  *v = Le32(p_.data());
  p_.remove_prefix(4);
  return true;
}
bool Parser::U64(uint64_t* v) {
  if (p_.size() < 8) return false;
  *v = Le64(p_.data());
  p_.remove_prefix(8);
  return true;
}
bool Parser::Bytes(size_t n, std::string_view* out) {
  if (p_.size() < n) return false;
  *out = p_.substr(0, n);
  p_.remove_prefix(n);
  return true;
}

Status StreamWriter::Add(Type t, std::string_view head, std::string_view tail) {
  const size_t len = head.size() + tail.size();
  if (len > kMaxPayload) return Status::Invalid("stream record too large");
  bytes_ += kRecordHeader + len + kRecordTrailer;
  if (!sink_) {
    ++seq_;
    return Status::Ok();
  }
  const size_t start = buf_.size();
  Put16(&buf_, static_cast<uint16_t>(t));
  Put16(&buf_, 0);
  Put32(&buf_, static_cast<uint32_t>(len));
  Put64(&buf_, seq_++);
  buf_.append(head);
  buf_.append(tail);
  uint32_t crc = Crc32c(0, buf_.data() + start, buf_.size() - start);
  Put32(&buf_, crc);
  if (buf_.size() >= limit_) return Flush();
  return Status::Ok();
}

Status StreamWriter::Flush() {
  if (buf_.empty() || !sink_) return Status::Ok();
  Status s = sink_(buf_);
  buf_.clear();
  return s;
}

Status StreamWriter::Finish(uint64_t data_bytes) {
  std::string p;
  Put64(&p, seq_);
  Put64(&p, data_bytes);
  PSM_RETURN_IF_ERROR(Add(Type::kEnd, p));
  return Flush();
}

Status StreamReader::Fill(size_t n, bool* eof) {
  *eof = false;
  if (pos_ > 0 && pos_ >= buf_.size() / 2) {
    buf_.erase(0, pos_);
    pos_ = 0;
  }
  while (buf_.size() - pos_ < n) {
    size_t have = buf_.size();
    size_t want = std::max<size_t>(n - (have - pos_), 1u << 20);
    buf_.resize(have + want);
    Result<size_t> r = src_(buf_.data() + have, want);
    if (!r.ok()) {
      buf_.resize(have);
      return r.status();
    }
    buf_.resize(have + r.value());
    if (r.value() == 0) {
      *eof = true;
      return Status::Ok();
    }
  }
  return Status::Ok();
}

Status StreamReader::Next(Record* out) {
  const std::string where = " (record " + std::to_string(seq_) + " at byte " +
                            std::to_string(offset_) + ")";
  bool eof = false;
  if (ended_) {
    PSM_RETURN_IF_ERROR(Fill(1, &eof));
    if (buf_.size() > pos_) return Status::Corruption("bytes after the stream's END record" + where);
    return Status::Invalid("read past the end of the stream");
  }
  PSM_RETURN_IF_ERROR(Fill(kRecordHeader, &eof));
  const size_t avail = buf_.size() - pos_;
  if (avail < kRecordHeader) {
    if (avail == 0 && seq_ == 0) return Status::Invalid("empty input: not a psmfs stream");
    return Status::IOError("truncated stream: it ends inside a record header" + where +
                           "; the stream is incomplete");
  }
  const char* h = buf_.data() + pos_;
  const uint16_t type = Le16(h);
  const uint16_t flags = Le16(h + 2);
  const uint32_t len = Le32(h + 4);
  const uint64_t seq = Le64(h + 8);
  if (seq_ == 0 && (type != static_cast<uint16_t>(Type::kHeader) || flags != 0 ||
                    len < kMagic.size() + 4 || len > kMaxPayload || seq != 0)) {
    return Status::Invalid("not a psmfs send stream (no stream header at the start)");
  }
  if (len > kMaxPayload) {
    return Status::Corruption("record length " + std::to_string(len) + " is impossible" + where);
  }
  const size_t total = kRecordHeader + len + kRecordTrailer;
  PSM_RETURN_IF_ERROR(Fill(total, &eof));
  if (buf_.size() - pos_ < total) {
    return Status::IOError("truncated stream: it ends inside a " +
                           std::string(TypeName(static_cast<Type>(type))) + " record" + where +
                           "; the stream is incomplete");
  }
  h = buf_.data() + pos_;
  const uint32_t want = Le32(h + kRecordHeader + len);
  if (Crc32c(0, h, kRecordHeader + len) != want) {
    return Status::Corruption("checksum mismatch" + where + ": the stream is damaged");
  }
  if (seq != seq_) {
    return Status::Corruption("record " + std::to_string(seq) + " found where record " +
                              std::to_string(seq_) + " belongs" + where +
                              ": records are missing, repeated or out of order");
  }
  if (flags != 0 || type < static_cast<uint16_t>(Type::kHeader) ||
      type > static_cast<uint16_t>(Type::kEnd)) {
    return Status::Corruption("unknown record type " + std::to_string(type) + where);
  }
  if (seq_ > 0 && type == static_cast<uint16_t>(Type::kHeader)) {
    return Status::Corruption("a second stream header" + where);
  }
  out->type = static_cast<Type>(type);
  out->seq = seq;
  out->payload = std::string_view(h + kRecordHeader, len);
  pos_ += total;
  offset_ += total;
  ++seq_;
  if (out->type == Type::kEnd) {
    Parser p(out->payload);
    uint64_t n = 0;
    if (!p.U64(&n) || n != seq) {
      return Status::Corruption("END record counts " + std::to_string(n) + " records, but " +
                                std::to_string(seq) + " came before it");
    }
    ended_ = true;
  }
  return Status::Ok();
}

}  // namespace psm::stream
