#include "common/nbd_errors.h"

#include <cerrno>

namespace dst::nbd {

uint32_t ErrnoToNbdError(int err, uint16_t command_flags) {
  switch (err) {
    case 0:
      return kSuccess;
    case EPERM:
    case EROFS:  // writes to a read-only export: the spec asks for EPERM
      return kEPERM;
    case EIO:
      return kEIO;
    case ENOMEM:  // the spec discourages it, but hiding it would mislead more
      return kENOMEM;
    case EINVAL:
      return kEINVAL;
    case ENOSPC:
    case EDQUOT:
    case EFBIG:
      return kENOSPC;
    case ESHUTDOWN:
      return kESHUTDOWN;
    case EOVERFLOW:
      // Only defined as the answer to an unfragmentable (DF) read.
      return (command_flags & kCmdFlagDf) ? kEOVERFLOW : kEINVAL;
    case ENOTSUP:
#if EOPNOTSUPP != ENOTSUP
    case EOPNOTSUPP:
#endif
      // Only defined as the quick refusal of a FAST_ZERO write-zeroes.
      return (command_flags & kCmdFlagFastZero) ? kENOTSUP : kEINVAL;
    default:
      // The spec leaves this open; EIO says "the server failed", whereas
      // EINVAL would blame the client's request.
      return kEIO;
  }
}

int NbdErrorToErrno(uint32_t nbd_error) {
  switch (nbd_error) {
    case kSuccess:
      return 0;
    case kEPERM:
      return EPERM;
    case kEIO:
      return EIO;
    case kENOMEM:
      return ENOMEM;
    case kEINVAL:
      return EINVAL;
    case kENOSPC:
      return ENOSPC;
    case kEOVERFLOW:
      return EOVERFLOW;
    case kENOTSUP:
      return ENOTSUP;
    case kESHUTDOWN:
      return ESHUTDOWN;
  }
  return EINVAL;  // "The client SHOULD treat an unexpected error value as ... NBD_EINVAL"
}

const char* NbdErrorName(uint32_t nbd_error) {
  switch (nbd_error) {
    case kSuccess:
      return "NBD_SUCCESS";
    case kEPERM:
      return "NBD_EPERM";
    case kEIO:
      return "NBD_EIO";
    case kENOMEM:
      return "NBD_ENOMEM";
    case kEINVAL:
      return "NBD_EINVAL";
    case kENOSPC:
      return "NBD_ENOSPC";
    case kEOVERFLOW:
      return "NBD_EOVERFLOW";
    case kENOTSUP:
      return "NBD_ENOTSUP";
    case kESHUTDOWN:
      return "NBD_ESHUTDOWN";
  }
  return "unknown";
}

}  // namespace dst::nbd
