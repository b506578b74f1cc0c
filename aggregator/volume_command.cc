#include "aggregator/volume_command.h"

#include <cstdio>

#include <CLI/CLI.hpp>

#include "aggregator/command_error.h"
#include "aggregator/control_client.h"

namespace dst::aggregator {

CLI::App* AddVolumeCommand(CLI::App& app, VolumeArgs* args) {
  CLI::App* volume = app.add_subcommand("volume", "list the volumes of a running aggregator");
  AddControlOption(*volume, &args->control);
  volume->add_option("action", args->action, "list: one line per volume")
      ->required()
      ->check(CLI::IsMember({"list"}));
  volume->add_flag("--json", args->json, "list: print JSON instead of lines");
  return volume;
}

std::string VolumeRequest(const VolumeArgs& args) {
  return std::string("volume list") + (args.json ? " json" : "") + "\n";
}

int RunVolume(const VolumeArgs& args) {
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
