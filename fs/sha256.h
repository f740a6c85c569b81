// SHA-256 (FIPS 180-4), for content checksums that users can compare with
// sha256sum(1) (psmctl history). Not constant-time; not for secrets.
//
// Thread safety: one object per thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace psm {

class Sha256 {
 public:
  Sha256();
  void Update(const void* data, size_t n);
  // The digest as 64 lowercase hex digits. Call once.
  std::string HexDigest();

 private:
  void Block(const uint8_t* p);
  uint32_t h_[8];
  uint8_t buf_[64];
  size_t used_ = 0;
  uint64_t total_ = 0;
};

std::string Sha256Hex(std::string_view data);

}  // namespace psm
