#include "aggregator/status_command.h"

#include <cstdio>

#include <CLI/CLI.hpp>

#include "aggregator/command_error.h"
#include "aggregator/control_client.h"
#include "aggregator/map/mapped_devices.h"

namespace dst::aggregator {

CLI::App* AddStatusCommand(CLI::App& app, StatusArgs* args) {
  CLI::App* status =
      app.add_subcommand("status", "show a running aggregator's volumes and members");
  AddControlOption(*status, &args->control);
  status->add_flag("--json", args->json, "print JSON instead of a table");
  return status;
}

int RunStatus(const StatusArgs& args) {
  std::string answer;
  const Status s = AskControl(args.control, args.json ? "status json\n" : "status\n", &answer);
  if (!s.ok()) return ExitWithError(s);
  // The devices `map` attached on this machine (list-mapped), after the aggregator's answer.
  const std::vector<map::MappedDevice> mapped = map::ListMappedDevices(map::kSysBlock);
  answer = args.json ? map::WithMappedJson(answer, mapped) : map::WithMappedTable(answer, mapped);
  std::fwrite(answer.data(), 1, answer.size(), stdout);
  return answer.rfind("error: ", 0) == 0 ? 1 : 0;
}

}  // namespace dst::aggregator
