// Translation between host errno values and the NBD reply error field.
// ErrnoToNbdError() follows the "Error values" section of the NBD spec,
// including which values are only legal in answer to certain command flags;
// NbdErrorToErrno() is the client side and always yields a host errno value.
// Pure functions, thread-safe.
#pragma once

#include <cstdint>

#include "common/nbd_protocol.h"

namespace dst::nbd {

// The NBD error to send for a request that failed with `err` (0 = success).
// `command_flags` are the request's kCmdFlag* bits: EOVERFLOW is only sent for
// reads with kCmdFlagDf and ENOTSUP only for kCmdFlagFastZero; otherwise both
// become EINVAL. EDQUOT/EFBIG become ENOSPC, EROFS becomes EPERM, and errno
// values without an NBD counterpart become EIO.
uint32_t ErrnoToNbdError(int err, uint16_t command_flags);

// The errno for an NBD error received from a server (0 = success). Values the
// spec does not define are treated as EINVAL, as it asks of clients.
int NbdErrorToErrno(uint32_t nbd_error);

// "NBD_EINVAL" etc. for log lines; "NBD_SUCCESS" for 0, "unknown" otherwise.
const char* NbdErrorName(uint32_t nbd_error);

}  // namespace dst::nbd
