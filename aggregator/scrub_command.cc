#include "aggregator/scrub_command.h"

#include <CLI/CLI.hpp>

#include "aggregator/control_client.h"

namespace dst::aggregator {

CLI::App* AddScrubCommand(CLI::App& app, ScrubArgs* args) {
  CLI::App* scrub = app.add_subcommand(
      "scrub", "start, pause, resume or stop the scrub of a volume of a running aggregator");
  AddControlOption(*scrub, &args->control);
  scrub->add_option("volume", args->volume, "the volume's name")->required();
  scrub->add_option("action", args->action, "start, pause, resume or stop")
      ->required()
      ->check(CLI::IsMember({"start", "pause", "resume", "stop"}));
  CLI::Option* check =
      scrub->add_flag("--check", args->check, "start: count bad blocks, repair nothing");
  CLI::Option* repair = scrub->add_flag(
      "--repair", args->repair,
      "start: rewrite a bad copy from one that verifies (the default for mirror and raid10)");
  check->excludes(repair);
  return scrub;
}

std::string ScrubRequest(const ScrubArgs& args) {
  std::string request = "scrub " + args.volume + " " + args.action;
  if (args.action == "start" && args.check) request += " check";
  if (args.action == "start" && args.repair) request += " repair";
  return request + "\n";
}

int RunScrub(const ScrubArgs& args) {
  return RunControlCommand(args.control, ScrubRequest(args));
}

}  // namespace dst::aggregator
