// Checksum key files, for `create` and `serve` of volumes with keyed checksums.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace dst::aggregator {

// A checksum key is a secret: 128 bits at least, whatever BLAKE2b itself would accept.
inline constexpr size_t kMinKeyFileSize = 16;

// Reads the key in `path` into *key. EINVAL (naming --key-file) when it is not 16 to 64 bytes.
// The caller wipes *key (explicit_bzero) once it has been used.
Status ReadKeyFile(const std::string& path, std::vector<uint8_t>* key);

// That the key file can be read and holds a key; the key itself is wiped at once.
Status CheckKeyFile(const std::string& path);

}  // namespace dst::aggregator
