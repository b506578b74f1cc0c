// Checks of what the server wrote back, so that the fuzz targets find
// malformed replies and not only crashes. Each check calls Fail() with what
// is wrong.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace dst::fuzz {

struct OptionReply {
  uint32_t option;
  uint32_t type;
};

// The greeting and the option replies at the start of `out`: each framed by
// its length field, with the contents its reply type requires. Returns the
// offset where they end (anything after is not an option reply); the replies
// seen, in order, go to `replies` if given.
size_t CheckOptionReplies(std::span<const uint8_t> out,
                          std::vector<OptionReply>* replies = nullptr);

// An NBD error value that the server may send for a request with `flags`.
bool AllowedNbdError(uint32_t error, uint16_t flags);

}  // namespace dst::fuzz
