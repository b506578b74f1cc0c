// The mapping rules come from the "Error values" section of doc/proto.md and
// the command flag descriptions for NBD_CMD_FLAG_DF and NBD_CMD_FLAG_FAST_ZERO.
#include "common/nbd_errors.h"

#include <doctest/doctest.h>

#include <cerrno>
#include <cstdint>
#include <string_view>

namespace dst::nbd::nbd_errors_test {
namespace {

constexpr uint16_t kNoFlags = 0;
constexpr uint16_t kAllFlags =
    kCmdFlagFua | kCmdFlagNoHole | kCmdFlagDf | kCmdFlagReqOne | kCmdFlagFastZero;

TEST_CASE("ErrnoToNbdError: success is zero") {
  CHECK(ErrnoToNbdError(0, kNoFlags) == 0u);
  CHECK(ErrnoToNbdError(0, kAllFlags) == 0u);
}

TEST_CASE("ErrnoToNbdError: values the spec defines pass through, whatever the flags") {
  for (uint16_t flags : {kNoFlags, kCmdFlagFua, kAllFlags}) {
    CAPTURE(flags);
    CHECK(ErrnoToNbdError(EPERM, flags) == kEPERM);
    CHECK(ErrnoToNbdError(EIO, flags) == kEIO);
    CHECK(ErrnoToNbdError(ENOMEM, flags) == kENOMEM);
    CHECK(ErrnoToNbdError(EINVAL, flags) == kEINVAL);
    CHECK(ErrnoToNbdError(ENOSPC, flags) == kENOSPC);
    CHECK(ErrnoToNbdError(ESHUTDOWN, flags) == kESHUTDOWN);
  }
}

TEST_CASE("ErrnoToNbdError: EDQUOT and EFBIG become ENOSPC") {
  CHECK(ErrnoToNbdError(EDQUOT, kNoFlags) == kENOSPC);
  CHECK(ErrnoToNbdError(EFBIG, kNoFlags) == kENOSPC);
  CHECK(ErrnoToNbdError(EFBIG, kCmdFlagFua) == kENOSPC);
}

TEST_CASE("ErrnoToNbdError: EROFS becomes EPERM") {
  CHECK(ErrnoToNbdError(EROFS, kNoFlags) == kEPERM);
  CHECK(ErrnoToNbdError(EROFS, kCmdFlagFua) == kEPERM);
}

TEST_CASE("ErrnoToNbdError: EOVERFLOW only for requests with DF") {
  CHECK(ErrnoToNbdError(EOVERFLOW, kCmdFlagDf) == kEOVERFLOW);
  CHECK(ErrnoToNbdError(EOVERFLOW, kCmdFlagDf | kCmdFlagFua) == kEOVERFLOW);
  CHECK(ErrnoToNbdError(EOVERFLOW, kNoFlags) == kEINVAL);
  CHECK(ErrnoToNbdError(EOVERFLOW, kCmdFlagFua) == kEINVAL);
  CHECK(ErrnoToNbdError(EOVERFLOW, kCmdFlagFastZero) == kEINVAL);
}

TEST_CASE("ErrnoToNbdError: ENOTSUP and EOPNOTSUPP only for requests with FAST_ZERO") {
  for (int err : {ENOTSUP, EOPNOTSUPP}) {
    CAPTURE(err);
    CHECK(ErrnoToNbdError(err, kCmdFlagFastZero) == kENOTSUP);
    CHECK(ErrnoToNbdError(err, kCmdFlagFastZero | kCmdFlagNoHole) == kENOTSUP);
    CHECK(ErrnoToNbdError(err, kNoFlags) == kEINVAL);
    CHECK(ErrnoToNbdError(err, kCmdFlagNoHole) == kEINVAL);
    CHECK(ErrnoToNbdError(err, kCmdFlagDf) == kEINVAL);
  }
}

TEST_CASE("ErrnoToNbdError: errno values without an NBD counterpart become EIO") {
  for (int err : {ENOENT, EBADF, EAGAIN, EACCES, EBUSY, ENXIO, EPIPE, ECONNRESET, ETIMEDOUT, ENODEV,
                  4000, -1}) {
    CAPTURE(err);
    CHECK(ErrnoToNbdError(err, kNoFlags) == kEIO);
    CHECK(ErrnoToNbdError(err, kAllFlags) == kEIO);
  }
}

TEST_CASE("ErrnoToNbdError: only ever produces values the spec defines") {
  for (int err = 0; err < 200; ++err) {
    for (uint16_t flags : {kNoFlags, kAllFlags}) {
      const uint32_t e = ErrnoToNbdError(err, flags);
      CAPTURE(err);
      CHECK(std::string_view(NbdErrorName(e)) != "unknown");
    }
  }
}

TEST_CASE("NbdErrorToErrno: defined values") {
  CHECK(NbdErrorToErrno(kSuccess) == 0);
  CHECK(NbdErrorToErrno(kEPERM) == EPERM);
  CHECK(NbdErrorToErrno(kEIO) == EIO);
  CHECK(NbdErrorToErrno(kENOMEM) == ENOMEM);
  CHECK(NbdErrorToErrno(kEINVAL) == EINVAL);
  CHECK(NbdErrorToErrno(kENOSPC) == ENOSPC);
  CHECK(NbdErrorToErrno(kEOVERFLOW) == EOVERFLOW);
  CHECK(NbdErrorToErrno(kENOTSUP) == ENOTSUP);
  CHECK(NbdErrorToErrno(kESHUTDOWN) == ESHUTDOWN);
}

TEST_CASE("NbdErrorToErrno: unexpected values are treated as EINVAL") {
  // proto.md: "The client SHOULD treat an unexpected error value as if it had
  // been NBD_EINVAL, rather than disconnecting from the server."
  for (uint32_t v : {2u, 13u, 122u, 0x80000000u, 0xFFFFFFFFu}) {
    CAPTURE(v);
    CHECK(NbdErrorToErrno(v) == EINVAL);
  }
}

TEST_CASE("errno -> NBD -> errno keeps every defined value") {
  for (int err : {0, EPERM, EIO, ENOMEM, EINVAL, ENOSPC, ESHUTDOWN}) {
    CAPTURE(err);
    CHECK(NbdErrorToErrno(ErrnoToNbdError(err, kNoFlags)) == err);
  }
  CHECK(NbdErrorToErrno(ErrnoToNbdError(EOVERFLOW, kCmdFlagDf)) == EOVERFLOW);
  CHECK(NbdErrorToErrno(ErrnoToNbdError(ENOTSUP, kCmdFlagFastZero)) == ENOTSUP);
}

TEST_CASE("NbdErrorName") {
  CHECK(std::string_view(NbdErrorName(0)) == "NBD_SUCCESS");
  CHECK(std::string_view(NbdErrorName(kEPERM)) == "NBD_EPERM");
  CHECK(std::string_view(NbdErrorName(kEIO)) == "NBD_EIO");
  CHECK(std::string_view(NbdErrorName(kENOMEM)) == "NBD_ENOMEM");
  CHECK(std::string_view(NbdErrorName(kEINVAL)) == "NBD_EINVAL");
  CHECK(std::string_view(NbdErrorName(kENOSPC)) == "NBD_ENOSPC");
  CHECK(std::string_view(NbdErrorName(kEOVERFLOW)) == "NBD_EOVERFLOW");
  CHECK(std::string_view(NbdErrorName(kENOTSUP)) == "NBD_ENOTSUP");
  CHECK(std::string_view(NbdErrorName(kESHUTDOWN)) == "NBD_ESHUTDOWN");
  CHECK(std::string_view(NbdErrorName(2)) == "unknown");
  CHECK(std::string_view(NbdErrorName(0xFFFFFFFF)) == "unknown");
}

}  // namespace
}  // namespace dst::nbd::nbd_errors_test
