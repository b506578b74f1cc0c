// `dst-aggregator serve`: checks the open-file limit, connects the members, builds the volumes
// (raw, or assembled from the members' superblocks with checksums: docs/integrity.md), starts
// the control plane (control/control_plane.h: status, metrics, stats lines), listens, and serves
// until SIGINT or SIGTERM, after which assembled volumes are closed clean. SIGHUP and `reload`
// read the --config file again and apply what changed (config_reloader.h). Its options are in
// serve_options.h, its command line in serve_args.h.
//
// Threading: runs the event loop on the calling thread until the server stops.
#pragma once

#include "aggregator/serve_args.h"
#include "aggregator/serve_config.h"

namespace dst::aggregator {

// The process exit code: 0 after a clean stop, 1 when the server could not start (the error is
// on stderr) or an assembled volume could not be closed clean. `args`: the command line `config`
// was made from, read again on reload (none, or no --config: nothing to reload).
int Serve(ServeConfig config, ServeArgs args = {});
// `serve` as its command line asks: only checks with --check-config, else Serve().
int RunServe(const ServeArgs& args);

}  // namespace dst::aggregator
