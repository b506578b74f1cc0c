// `dst-aggregator serve`: checks the open-file limit, connects the members, builds the volumes
// (raw, or assembled from the members' superblocks with checksums: docs/integrity.md), starts
// the control plane (control/control_plane.h: status, metrics, stats lines), listens, and serves
// until SIGINT or SIGTERM, after which assembled volumes are closed clean. SIGHUP and `reload`
// read the --config file again and apply what changed (config_reloader.h). Its options are in
// serve_options.h, its command line in serve_args.h.
//
// Threading: runs the event loop on the calling thread until the server stops.
#pragma once

#include <functional>
#include <memory>

#include "aggregator/serve_args.h"
#include "aggregator/serve_config.h"

namespace dst::control {
struct Server;
}  // namespace dst::control

namespace dst::aggregator {

// The process exit code: 0 after a clean stop, 1 when the server could not start (the error is
// on stderr) or an assembled volume could not be closed clean. `args`: the command line `config`
// was made from, read again on reload (none, or no --config: nothing to reload).
int Serve(ServeConfig config, ServeArgs args = {});

// What another part of the aggregator runs alongside serving (serve --cluster's lease keeper).
struct ServeHooks {
  // Called once the volumes are open and the listeners bound, before the event loop runs; what
  // it returns is kept until the volumes are closed, and destroyed before the event loop.
  std::function<std::shared_ptr<void>(control::Server&)> serving;
};
int Serve(ServeConfig config, ServeArgs args, ServeHooks hooks);
// `serve` as its command line asks: only checks with --check-config, else Serve().
int RunServe(const ServeArgs& args);

}  // namespace dst::aggregator
