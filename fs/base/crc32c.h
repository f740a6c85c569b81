// CRC-32C (Castagnoli), the checksum of send-stream records and the
// superblock: Intel's ISA-L (libisal, crc32_iscsi), which picks the CPU's
// CRC32 / carry-less multiply instructions at run time. Every CRC-32C in
// psmfs goes through this one function.
//
// Convention (as Google's crc32c::Extend, and as psmfs always used it): `crc`
// is the value returned for the data before (0 to start); pre- and post-
// inversion are done here. So Crc32c(Crc32c(0, a), b) == Crc32c(0, a + b), and
// Crc32c(0, "123456789", 9) == 0xe3069283.
//
// Thread safety: a pure function.
#pragma once

#include <cstddef>
#include <cstdint>

namespace psm {

uint32_t Crc32c(uint32_t crc, const void* data, size_t n);

}  // namespace psm
