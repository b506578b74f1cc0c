#include "common/status.h"

#include <cerrno>

#include <doctest/doctest.h>

using dst::Status;

TEST_CASE("Status carries errno and context") {
  CHECK(Status::Ok().ok());
  CHECK(Status::Ok().ToString() == "OK");
  const Status s = Status::FromErrno(ENOENT, "open /nonexistent");
  CHECK_FALSE(s.ok());
  CHECK(s.err() == ENOENT);
  CHECK(s.message() == "open /nonexistent: No such file or directory");
  const Status wrapped = s.Wrap("export disk0");
  CHECK(wrapped.err() == ENOENT);
  CHECK(wrapped.message() == "export disk0: open /nonexistent: No such file or directory");
  CHECK(Status::Invalid("bad").err() == EINVAL);
  CHECK(Status::FromErrno(0, "x").err() == EIO);  // an error is never reported as success
}

namespace {
Status FailsThenNeverReached(bool& reached) {
  DST_RETURN_IF_ERROR(Status::Error(EIO, "first"));
  reached = true;
  return Status::Ok();
}
}  // namespace

TEST_CASE("DST_RETURN_IF_ERROR returns the first error") {
  bool reached = false;
  const Status s = FailsThenNeverReached(reached);
  CHECK(s.err() == EIO);
  CHECK_FALSE(reached);
}
