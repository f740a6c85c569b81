#include "fs/device/superblock.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <random>

#include "fs/base/crc32c.h"
#include "meta/keys.h"

namespace psm {

std::string NewUuid() {
  unsigned char b[16];
  int fd = ::open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  bool ok = fd >= 0 && ::read(fd, b, 16) == 16;
  if (fd >= 0) ::close(fd);
  if (!ok) {
    std::random_device rd;
    for (auto& c : b) c = static_cast<unsigned char>(rd());
  }
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  char s[37];
  std::snprintf(s, sizeof s,
                "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
                b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
                b[14], b[15]);
  return s;
}

std::string EncodeSuperblock(const Superblock& sb) {
  std::string s(kSuperMagic, 8);
  PutLE32(&s, sb.format_version);
  PutLE32(&s, sb.block_size);
  PutLE64(&s, sb.block_count);
  PutLE32(&s, sb.chunk_blocks);
  PutLE32(&s, 0);
  std::string u = sb.uuid;
  u.resize(36, '\0');
  s.append(u);
  PutLE32(&s, 0);
  PutLE64(&s, sb.mount_generation);
  PutLE32(&s, Crc32c(0, s.data(), s.size()));
  s.resize(kSuperBytes, '\0');
  return s;
}

Status DecodeSuperblock(const std::string& b, Superblock* sb) {
  if (b.size() < 84) return Status::Corruption("image too small to hold a superblock");
  if (memcmp(b.data(), kSuperMagic, 8) != 0) {
    return Status::Corruption("not a psmfs image (bad magic in block 0)");
  }
  uint32_t crc = GetLE32(b.data() + 80);
  if (crc != Crc32c(0, b.data(), 80)) return Status::Corruption("superblock checksum mismatch");
  sb->format_version = GetLE32(b.data() + 8);
  if (sb->format_version != kFormatVersion) {
    return Status::NotSupported("unknown psmfs format version " +
                                std::to_string(sb->format_version) + " (this build reads " +
                                std::to_string(kFormatVersion) + ")");
  }
  sb->block_size = GetLE32(b.data() + 12);
  sb->block_count = GetLE64(b.data() + 16);
  sb->chunk_blocks = GetLE32(b.data() + 24);
  sb->uuid.assign(b.data() + 32, 36);
  sb->mount_generation = GetLE64(b.data() + 72);
  if (sb->block_size < 512 || (sb->block_size & (sb->block_size - 1)) || sb->chunk_blocks == 0) {
    return Status::Corruption("superblock has an impossible geometry");
  }
  return Status::Ok();
}

Status ReadSuperblock(BlockDevice* dev, Superblock* sb) {
  if (dev->size() < kSuperBytes) return Status::Corruption("image is truncated (no superblock)");
  std::string b(kSuperBytes, '\0');
  PSM_RETURN_IF_ERROR(dev->Read(0, b.data(), b.size()));
  PSM_RETURN_IF_ERROR(DecodeSuperblock(b, sb));
  if (dev->size() < sb->block_count * sb->block_size) {
    return Status::Corruption("image is truncated: " + std::to_string(dev->size()) +
                              " bytes, superblock says " +
                              std::to_string(sb->block_count * sb->block_size));
  }
  return Status::Ok();
}

Status WriteSuperblock(BlockDevice* dev, const Superblock& sb) {
  std::string b = EncodeSuperblock(sb);
  PSM_RETURN_IF_ERROR(dev->Write(0, b.data(), b.size()));
  return dev->Sync();
}

}  // namespace psm
