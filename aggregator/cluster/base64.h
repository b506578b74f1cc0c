// Standard base64 (RFC 4648, with padding), the encoding etcd's JSON gateway uses for keys and
// values. Pure functions; any thread.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace dst::cluster {

std::string Base64Encode(std::string_view bytes);
// nullopt for anything that is not canonical padded base64.
std::optional<std::string> Base64Decode(std::string_view text);

}  // namespace dst::cluster
