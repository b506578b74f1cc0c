// Status: the result of an operation that can fail, as an errno value plus a
// human-readable context ("pwrite /data/disk0: No space left on device").
//
// errno is the currency because every layer of dst ends in one: the nbdkit
// plugin reports errors with nbdkit_set_error(errno), and the NBD protocol
// carries errno-like values. Status is a plain value type, safe to copy and to
// move between threads.
#pragma once

#include <string>
#include <string_view>
#include <utility>

namespace dst {

class Status {
 public:
  Status() = default;  // success

  static Status Ok() { return Status(); }
  // An error with an explicit errno value and message (the message is shown as is).
  static Status Error(int err, std::string message) { return Status(err, std::move(message)); }
  // "context: strerror(err)", the nbdkit "pwrite: %m" convention.
  static Status FromErrno(int err, std::string_view context);
  // An invalid argument or configuration (EINVAL) with the given message.
  static Status Invalid(std::string message) { return Status(22 /*EINVAL*/, std::move(message)); }

  bool ok() const { return err_ == 0; }
  explicit operator bool() const { return ok(); }
  // The errno value; 0 when ok().
  int err() const { return err_; }
  const std::string& message() const { return message_; }
  // "OK" or the message.
  std::string ToString() const { return ok() ? "OK" : message_; }

  // Prefixes the message with more context, keeping the errno:
  // Status(ENOENT, "open: ...").Wrap("export disk0") -> "export disk0: open: ...".
  Status Wrap(std::string_view context) const;

 private:
  Status(int err, std::string message) : err_(err), message_(std::move(message)) {}

  int err_ = 0;
  std::string message_;
};

// Returns from the enclosing function when `expr` yields a non-OK Status.
#define DST_RETURN_IF_ERROR(expr)              \
  do {                                         \
    ::dst::Status dst_status_ = (expr);        \
    if (!dst_status_.ok()) return dst_status_; \
  } while (0)

// The same inside a coroutine.
#define DST_CO_RETURN_IF_ERROR(expr)              \
  do {                                            \
    ::dst::Status dst_status_ = (expr);           \
    if (!dst_status_.ok()) co_return dst_status_; \
  } while (0)

}  // namespace dst
