#include "aggregator/member/member_connection.h"

namespace dst::member {

std::string RedactSession(std::string_view text, std::string_view session) {
  if (session.empty()) return std::string(text);
  std::string out;
  out.reserve(text.size());
  for (size_t at = 0; at < text.size();) {
    const size_t found = text.find(session, at);
    out.append(text.substr(at, found - at));
    if (found == std::string_view::npos) break;
    out += "...";
    at = found + session.size();
  }
  return out;
}

}  // namespace dst::member
