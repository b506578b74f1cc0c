#include "aggregator/reload_command.h"

#include <CLI/CLI.hpp>

#include "aggregator/control_client.h"

namespace dst::aggregator {

CLI::App* AddReloadCommand(CLI::App& app, ReloadArgs* args) {
  CLI::App* reload = app.add_subcommand(
      "reload", "make a running aggregator read its --config file again and apply what changed");
  AddControlOption(*reload, &args->control);
  return reload;
}

int RunReload(const ReloadArgs& args) {
  return RunControlCommand(args.control, "reload\n", kReloadTimeout);
}

}  // namespace dst::aggregator
