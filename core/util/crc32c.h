// CRC-32C (Castagnoli, the polynomial of iSCSI, ext4 and LevelDB), used to
// detect corrupted bytes in persisted state. Software, table-driven.
#ifndef SPOTTER_CORE_UTIL_CRC32C_H_
#define SPOTTER_CORE_UTIL_CRC32C_H_

#include <cstdint>
#include <string_view>

namespace spotter {

// The CRC-32C of `data`, continuing from `crc` (the CRC of the bytes before;
// 0 to start). Thread-safe. Crc32c("123456789") == 0xE3069283.
uint32_t Crc32c(std::string_view data, uint32_t crc = 0);

}  // namespace spotter

#endif  // SPOTTER_CORE_UTIL_CRC32C_H_
