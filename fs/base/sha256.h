// SHA-256 for content checksums that users can compare with sha256sum(1)
// (psmctl history) and for stream identities: OpenSSL's libcrypto (EVP), which
// uses the CPU's SHA instructions where it has them.
//
// libcrypto failing to give SHA-256 (no memory, a broken provider
// configuration) is fatal, as running out of memory is: the message goes to
// stderr and the process aborts.
//
// Thread safety: one Sha256 object per thread; Sha256Hex from any thread.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

struct evp_md_ctx_st;  // OpenSSL's EVP_MD_CTX

namespace psm {

class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void Update(const void* data, size_t n);
  // The digest as 64 lowercase hex digits. Call once.
  std::string HexDigest();

 private:
  evp_md_ctx_st* ctx_;
};

std::string Sha256Hex(std::string_view data);

}  // namespace psm
