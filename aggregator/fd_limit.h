// The open-file limit a server needs: every client connection, member connection, listener and
// control or metrics client is a file descriptor, and a server that runs out of them cannot
// accept clients nor reconnect members. Checked once at start, before anything is opened.
//
// Threading: any thread; changes the process's RLIMIT_NOFILE.
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"

namespace dst::aggregator {

// Makes room for `needed` descriptors: raises the soft RLIMIT_NOFILE up to `needed` (never past
// the hard limit) when it is lower, and logs that. EMFILE when even the hard limit is lower,
// with a message of what `what` (e.g. "--max-connections 1024") needs, the limit, and the
// largest setting that would fit given `reserve` descriptors kept for everything else.
Status EnsureFileLimit(uint64_t needed, uint64_t reserve, const std::string& what);

}  // namespace dst::aggregator
