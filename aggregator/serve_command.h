// `dst-aggregator serve`: connects the members, builds the volumes (raw, or assembled from the
// members' superblocks with checksums: docs/integrity.md), listens, and serves until SIGINT or
// SIGTERM, after which assembled volumes are closed clean. Logs one stats line per member (and
// per assembled volume) on SIGUSR1 and every --stats-interval.
//
// Threading: runs the event loop on the calling thread until the server stops.
#pragma once

#include "aggregator/serve_config.h"

namespace dst::aggregator {

// The process exit code: 0 after a clean stop, 1 when the server could not start (the error is
// on stderr) or an assembled volume could not be closed clean.
int Serve(ServeConfig config);

}  // namespace dst::aggregator
