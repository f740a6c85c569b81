// The checksums psmfs takes from libraries: CRC-32C (ISA-L, fs/base/crc32c.h)
// against published vectors and a bit-by-bit reference, in pieces and at
// every alignment; SHA-256 (libcrypto, fs/base/sha256.h) against FIPS 180-4's
// long vector and sha256sum(1). (fileserver_test has the short vectors.)
#include <doctest/doctest.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <string>

#include "fs/base/crc32c.h"
#include "fs/base/sha256.h"

using psm::Crc32c;

namespace {

// The definition, one bit at a time (reflected polynomial 0x82F63B78).
uint32_t Reference(const std::string& s) {
  uint32_t c = 0xFFFFFFFFu;
  for (unsigned char b : s) {
    c ^= b;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
  }
  return ~c;
}

uint32_t Crc(const std::string& s) { return Crc32c(0, s.data(), s.size()); }

}  // namespace

TEST_CASE("crc32c: published check values (RFC 3720 B.4, the CRC catalogue)") {
  CHECK(Crc("") == 0u);
  CHECK(Crc("123456789") == 0xE3069283u);
  CHECK(Crc(std::string(32, '\0')) == 0x8A9136AAu);
  CHECK(Crc(std::string(32, '\xff')) == 0x62A8AB43u);
  std::string up, down;
  for (int i = 0; i < 32; ++i) {
    up.push_back(static_cast<char>(i));
    down.push_back(static_cast<char>(31 - i));
  }
  CHECK(Crc(up) == 0x46DD794Eu);
  CHECK(Crc(down) == 0x113FDB5Cu);
}

TEST_CASE("crc32c: equals the bitwise definition at every length, alignment and split") {
  std::string data(3 * 4096 + 77, '\0');
  uint32_t x = 12345;
  for (char& c : data) {
    x = x * 1103515245u + 12345u;
    c = static_cast<char>(x >> 16);
  }
  for (size_t len :
       {size_t{1}, size_t{7}, size_t{8}, size_t{15}, size_t{16}, size_t{63}, size_t{64},
        size_t{255}, size_t{256}, size_t{1023}, size_t{4096}, size_t{4096 + 13}, data.size() - 9}) {
    for (size_t off = 0; off < 9; ++off) {
      const std::string piece = data.substr(off, len);
      INFO("len " << len << " offset " << off);
      const uint32_t want = Reference(piece);
      REQUIRE(Crc32c(0, data.data() + off, len) == want);
      // Extending: the CRC of the first part continues over the rest.
      for (size_t cut : {size_t{0}, len / 3, len / 2, len}) {
        uint32_t c = Crc32c(0, piece.data(), cut);
        CHECK(Crc32c(c, piece.data() + cut, len - cut) == want);
      }
    }
  }
}

TEST_CASE("sha256: a million 'a's in uneven pieces; the digest sha256sum(1) prints") {
  const std::string a(1000000, 'a');
  psm::Sha256 h;
  for (size_t i = 0, k = 1; i < a.size(); i += k, k = k * 3 % 70001 + 1)
    h.Update(a.data() + i, std::min(k, a.size() - i));
  CHECK(h.HexDigest() == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  CHECK(psm::Sha256Hex(a) == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");

  // Any bytes: what `psmctl history` shows is what sha256sum says of the file.
  std::string data(3 << 20, '\0');
  uint32_t x = 7;
  for (char& c : data) {
    x = x * 1664525u + 1013904223u;
    c = static_cast<char>(x >> 24);
  }
  char path[] = "/tmp/psm-sha-XXXXXX";
  int fd = mkstemp(path);
  REQUIRE(fd >= 0);
  REQUIRE(::write(fd, data.data(), data.size()) == static_cast<ssize_t>(data.size()));
  ::close(fd);
  FILE* p = ::popen((std::string("sha256sum ") + path).c_str(), "r");
  REQUIRE(p != nullptr);
  char out[65] = {};
  REQUIRE(std::fread(out, 1, 64, p) == 64);
  ::pclose(p);
  ::unlink(path);
  CHECK(psm::Sha256Hex(data) == std::string(out, 64));
}
