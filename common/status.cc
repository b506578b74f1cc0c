#include "common/status.h"

#include <cerrno>
#include <cstring>

namespace dst {

Status Status::FromErrno(int err, std::string_view context) {
  // strerror_r's GNU form returns the message, which may not be our buffer.
  char buf[128];
  const char* text = strerror_r(err, buf, sizeof buf);
  std::string message(context);
  message += ": ";
  message += text;
  return Status(err == 0 ? EIO : err, std::move(message));
}

Status Status::Wrap(std::string_view context) const {
  if (ok()) return *this;
  std::string message(context);
  message += ": ";
  message += message_;
  return Status(err_, std::move(message));
}

}  // namespace dst
