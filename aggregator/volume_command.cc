#include "aggregator/volume_command.h"

#include <cstdio>

#include <CLI/CLI.hpp>

#include "aggregator/command_error.h"
#include "aggregator/control_client.h"

namespace dst::aggregator {

CLI::App* AddVolumeCommand(CLI::App& app, VolumeArgs* args) {
  CLI::App* volume =
      app.add_subcommand("volume", "list the volumes of a running aggregator, or remove one");
  AddControlOption(*volume, &args->control);
  volume
      ->add_option("action", args->action,
                   "list: one line per volume (name, layout, size, clients, state); remove: "
                   "close a volume and release its members while the others serve")
      ->required()
      ->check(CLI::IsMember({"list", "remove"}));
  volume->add_option("name", args->name, "remove: the volume");
  volume->add_flag("--json", args->json, "list: print JSON instead of lines");
  volume->add_flag("--force", args->force,
                   "remove: end the volume's clients (their requests in flight complete, later "
                   "ones get ESHUTDOWN) instead of refusing while any is connected");
  return volume;
}

std::string VolumeRequest(const VolumeArgs& args) {
  if (args.action == "remove")
    return "volume remove " + args.name + (args.force ? " force" : "") + "\n";
  return std::string("volume list") + (args.json ? " json" : "") + "\n";
}

int RunVolume(const VolumeArgs& args) {
  const bool remove = args.action == "remove";
  if (remove && args.name.empty())
    return ExitWithError(Status::Invalid("volume remove needs the volume's name"));
  if (!remove && !args.name.empty())
    return ExitWithError(Status::Invalid("volume list takes no name"));
  if (remove && args.json) return ExitWithError(Status::Invalid("volume remove takes no --json"));
  if (!remove && args.force) return ExitWithError(Status::Invalid("volume list takes no --force"));
  if (remove) return RunControlCommand(args.control, VolumeRequest(args), kVolumeRemoveTimeout);
  std::string answer;
  const Status s = AskControl(args.control, VolumeRequest(args), &answer);
  if (!s.ok()) return ExitWithError(s);
  if (answer.rfind("error: ", 0) == 0) {
    while (!answer.empty() && answer.back() == '\n')
      answer.pop_back();
    return ExitWithError(Status::Invalid(answer.substr(std::string("error: ").size())));
  }
  std::fwrite(answer.data(), 1, answer.size(), stdout);
  return 0;
}

}  // namespace dst::aggregator
