// The error of the libnbd call that just failed on this thread, as a Status
// whose message is libnbd's without the API call name. Header-only, for
// every file that calls libnbd (the server's loop and the one-shot commands).
//
// Threading: libnbd keeps the last error per thread; call right after the
// failing call, on the same thread.
#pragma once

#include <libnbd.h>

#include <string>
#include <string_view>

#include "common/status.h"

namespace dst::member {

// libnbd prefixes its messages with the API call ("nbd_aio_connect_uri:
// connect: ..."). We know which call we made; the rest is the news.
inline std::string LibnbdMessage(const char* message) {
  if (message == nullptr) return "unknown libnbd error";
  std::string_view text(message);
  const size_t colon = text.find(": ");
  if (text.starts_with("nbd_") && colon != std::string_view::npos) text.remove_prefix(colon + 2);
  return std::string(text);
}

inline Status LibnbdError(int fallback_errno) {
  const int err = nbd_get_errno();
  return Status::Error(err != 0 ? err : fallback_errno, LibnbdMessage(nbd_get_error()));
}

}  // namespace dst::member
