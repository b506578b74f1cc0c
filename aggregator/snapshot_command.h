// `dst-aggregator snapshot list VOLUME [--json] [--control PATH]`: the snapshot points of a volume
// served through a staging log by a running aggregator (docs/staging-log.md, "Snapshots"): the
// oldest and newest sequence, with their times, each exported read-only as VOLUME@SEQ. Prints the
// aggregator's answer; exits 1 with its error (or why it could not be asked) on stderr.
//
// Threading: blocking, on the calling thread.
#pragma once

#include <string>

namespace CLI {
class App;
}  // namespace CLI

namespace dst::aggregator {

struct SnapshotArgs {
  std::string control;  // "" for DefaultControlPath()
  std::string action;   // list
  std::string volume;
  bool json = false;
};

CLI::App* AddSnapshotCommand(CLI::App& app, SnapshotArgs* args);
int RunSnapshot(const SnapshotArgs& args);

}  // namespace dst::aggregator
