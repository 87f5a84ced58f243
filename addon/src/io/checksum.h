// CRC-32C (Castagnoli), the checksum every block carries on disk. SSE4.2's crc32
// instruction where the CPU has it, a table otherwise; both give the same value.
#pragma once
#include <cstddef>
#include <cstdint>

namespace spillway {
uint32_t Crc32c(const void* data, size_t length, uint32_t crc = 0);
}
