// The command line of `dst-aggregator serve`: every option of the two tables (serve_options.h)
// as --NAME, plus --config, --check-config, -v and the member URIs. Option texts are kept as
// given and applied after parsing by the same parsers the config file uses.
//
// Threading: pure data and functions.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "aggregator/serve_config.h"
#include "aggregator/serve_options.h"
#include "common/status.h"

namespace CLI {
class App;
}  // namespace CLI

namespace dst::aggregator {

// What `serve` was given on the command line, applied after parsing (ServeConfigFromArgs).
struct ServeArgs {
  // Every table option given, with its text, in the order given.
  std::vector<std::pair<const ServeOption*, std::string>> options;
  std::vector<std::pair<const VolumeOption*, std::string>> volume_options;
  std::vector<std::string> members;
  std::string config_file;
  bool verbose = false;
  bool check_config = false;
};

// Adds `serve` with every option of both tables, --config, --check-config, -v and the member
// URIs. `args` must outlive the parse.
CLI::App* AddServeCommand(CLI::App& app, ServeArgs* args);
// The configuration the command line asks for: its options, then the --config file over them
// (keys in the file win), or the one volume of its member URIs. Errors name the option.
Status ServeConfigFromArgs(const ServeArgs& args, ServeConfig* config);

}  // namespace dst::aggregator
