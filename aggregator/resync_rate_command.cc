#include "aggregator/resync_rate_command.h"

#include <CLI/CLI.hpp>

#include "aggregator/control_client.h"

namespace dst::aggregator {

CLI::App* AddResyncRateCommand(CLI::App& app, ResyncRateArgs* args) {
  CLI::App* rate = app.add_subcommand(
      "resync-rate", "set the resync, rebuild and scrub rates of a volume of a running aggregator");
  AddControlOption(*rate, &args->control);
  rate->add_option("volume", args->volume, "the volume's name")->required();
  rate->add_option("--min", args->min, "bytes per second always allowed, such as 1M")->required();
  rate->add_option("--max", args->max, "bytes per second while clients are idle, such as 200M")
      ->required();
  return rate;
}

// The values go as given (no spaces: one word each), so that the aggregator's one parser
// decides, and its error names them.
int RunResyncRate(const ResyncRateArgs& args) {
  return RunControlCommand(args.control,
                           "resync-rate " + args.volume + " " + args.min + " " + args.max + "\n");
}

}  // namespace dst::aggregator
