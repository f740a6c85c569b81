// Superblock: block 0 of the image. Everything else about the volume lives
// in RocksDB; the superblock lets a tool recognise the image, its format
// version and geometry, and carries the mount generation (bumped by every
// mount, so a failover is visible).
//
// Layout (STORED, little-endian, docs/on-disk-format.md):
//   0  magic "PSMFSVOL" (8 bytes)   8 format version u32
//  12  block size u32              16 block count u64
//  24  chunk blocks u32            28 reserved u32
//  32  uuid (36 ASCII chars)       68 reserved (4)
//  72  mount generation u64        80 crc32c of bytes [0, 80) u32
#pragma once

#include <cstdint>
#include <string>

#include "fs/device/block_device.h"
#include "meta/status.h"

namespace psm {

inline constexpr char kSuperMagic[8] = {'P', 'S', 'M', 'F', 'S', 'V', 'O', 'L'};
inline constexpr size_t kSuperBytes = 512;

struct Superblock {
  uint32_t format_version = 0;
  uint32_t block_size = 0;
  uint64_t block_count = 0;   // whole image, including block 0
  uint32_t chunk_blocks = 0;  // logical chunk size in blocks
  std::string uuid;           // 36 characters
  uint64_t mount_generation = 0;
};

std::string EncodeSuperblock(const Superblock& sb);  // kSuperBytes bytes
// Clear messages for: foreign image (magic), unknown format, checksum.
Status DecodeSuperblock(const std::string& bytes, Superblock* sb);
Status ReadSuperblock(BlockDevice* dev, Superblock* sb);
// Writes and syncs.
Status WriteSuperblock(BlockDevice* dev, const Superblock& sb);
std::string NewUuid();

}  // namespace psm
