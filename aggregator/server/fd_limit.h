// The open-file limit (RLIMIT_NOFILE) against what a server needs: one
// descriptor per client connection it accepts (--max-connections), the ones
// it holds anyway (member connections, listeners, the control socket and the
// metrics endpoint, the log), and kSpareDescriptors for the transient ones
// (a member reconnecting opens its new socket before the old one is gone;
// libnbd, TLS credential files). Checked once at start, so that a server
// that would run out of descriptors under load says so before it serves:
// accept() failing with EMFILE later only pauses the accept loop
// (AcceptBackoff), but member reconnects fail meanwhile.
//
// Descriptors already open at start are not counted (a supervisor hands over
// three); only the limits are compared.
//
// Threading: call at start-up, before the event loop runs.
#pragma once

#include <sys/resource.h>

#include <cstddef>
#include <cstdint>

#include "common/status.h"

namespace dst::server {

inline constexpr uint64_t kSpareDescriptors = 64;

// What the soft limit should become for `max_connections` clients and
// `others` descriptors, given the current `limits`: unchanged when it is
// enough (or unlimited), raised to the need when the hard limit allows it;
// EMFILE naming --max-connections, the need and the hard limit otherwise.
Status PlanFileLimit(uint64_t max_connections, uint64_t others, const struct rlimit& limits,
                     rlim_t* soft);

// Applies PlanFileLimit to this process: raises the soft limit if needed
// (logged), or returns its error.
Status EnsureFileLimit(uint64_t max_connections, uint64_t others);

}  // namespace dst::server
