#include "fs/base/crc32c.h"

#include <isa-l/crc.h>

#include <climits>

namespace psm {

uint32_t Crc32c(uint32_t crc, const void* data, size_t n) {
  // crc32_iscsi neither inverts its input nor its output, takes an int length
  // and a non-const pointer (it only reads).
  auto* p = static_cast<unsigned char*>(const_cast<void*>(data));
  uint32_t c = ~crc;
  while (n > 0) {
    const size_t k = n < (size_t{1} << 30) ? n : (size_t{1} << 30);
    c = crc32_iscsi(p, static_cast<int>(k), c);
    p += k;
    n -= k;
  }
  return ~c;
}

}  // namespace psm
