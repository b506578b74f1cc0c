#include "aggregator/snapshot_command.h"

#include <CLI/CLI.hpp>

#include "aggregator/control_client.h"

namespace dst::aggregator {

CLI::App* AddSnapshotCommand(CLI::App& app, SnapshotArgs* args) {
  CLI::App* snapshot = app.add_subcommand(
      "snapshot", "list the snapshot points (VOLUME@SEQ exports) of a volume with a staging log");
  AddControlOption(*snapshot, &args->control);
  snapshot->add_option("action", args->action, "list")->required()->check(CLI::IsMember({"list"}));
  snapshot->add_option("volume", args->volume, "the volume's name")->required();
  snapshot->add_flag("--json", args->json, "print JSON");
  return snapshot;
}

int RunSnapshot(const SnapshotArgs& args) {
  return RunControlCommand(args.control,
                           "snapshot list " + args.volume + (args.json ? " json" : "") + "\n");
}

}  // namespace dst::aggregator
