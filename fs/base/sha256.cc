#include "fs/base/sha256.h"

#include <openssl/err.h>
#include <openssl/evp.h>

#include <cstdio>
#include <cstdlib>

namespace psm {
namespace {

[[noreturn]] void Fail(const char* what) {
  char err[256] = "";
  ERR_error_string_n(ERR_get_error(), err, sizeof(err));
  std::fprintf(stderr, "psmfs: libcrypto cannot compute SHA-256 (%s): %s\n", what, err);
  std::abort();
}

// Fetched once: an implicit fetch at every EVP_DigestInit costs a lookup.
const EVP_MD* Md() {
  static const EVP_MD* const md = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  if (md == nullptr) Fail("EVP_MD_fetch");
  return md;
}

std::string Hex(const unsigned char* d, unsigned n) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out(2 * n, '0');
  for (unsigned i = 0; i < n; ++i) {
    out[2 * i] = kDigits[d[i] >> 4];
    out[2 * i + 1] = kDigits[d[i] & 15];
  }
  return out;
}

}  // namespace

Sha256::Sha256() : ctx_(EVP_MD_CTX_new()) {
  if (ctx_ == nullptr || EVP_DigestInit_ex2(ctx_, Md(), nullptr) != 1) Fail("EVP_DigestInit");
}

Sha256::~Sha256() { EVP_MD_CTX_free(ctx_); }

void Sha256::Update(const void* data, size_t n) {
  if (EVP_DigestUpdate(ctx_, data, n) != 1) Fail("EVP_DigestUpdate");
}

std::string Sha256::HexDigest() {
  unsigned char d[EVP_MAX_MD_SIZE];
  unsigned n = 0;
  if (EVP_DigestFinal_ex(ctx_, d, &n) != 1) Fail("EVP_DigestFinal");
  return Hex(d, n);
}

std::string Sha256Hex(std::string_view data) {
  unsigned char d[EVP_MAX_MD_SIZE];
  unsigned n = 0;
  if (EVP_Digest(data.data(), data.size(), d, &n, Md(), nullptr) != 1) Fail("EVP_Digest");
  return Hex(d, n);
}

}  // namespace psm
