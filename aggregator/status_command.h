// `dst-aggregator status [--control PATH] [--json]`: asks a running aggregator
// over its control socket for its volumes and members, and prints the answer
// (a table, or JSON: docs/operations.md describes every field). The default control socket in
// a shared temporary directory is used only if its directory is ours (control/control_path.h),
// and an answer is read up to a bound. The kernel NBD devices `map` attached on this machine
// follow (map/mapped_devices.h): a table after the aggregator's, or "mapped" in the JSON.
//
// Threading: blocking, on the calling thread.
#pragma once

#include <string>

namespace CLI {
class App;
}  // namespace CLI

namespace dst::aggregator {

struct StatusArgs {
  std::string control;  // "" for DefaultControlPath()
  bool json = false;
};

CLI::App* AddStatusCommand(CLI::App& app, StatusArgs* args);
// The process exit code: 0 when the aggregator answered, 1 (with one error
// line on stderr) when it could not be reached or did not answer in time.
int RunStatus(const StatusArgs& args);

}  // namespace dst::aggregator
