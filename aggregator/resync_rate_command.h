// `dst-aggregator resync-rate [--control PATH] VOLUME --min RATE --max RATE`: sets how fast the
// background work of a volume of a running aggregator (resync, rebuild, scrub) may go, in bytes
// per second given as sizes (1M, 200M): the floor always allowed and the most while clients are
// idle (docs/redundancy.md, "Throttle"). Effective at once, without restarting any job; not
// kept across a restart (--resync-rate-min/--resync-rate-max and the config keys are).
//
// Threading: blocking, on the calling thread.
#pragma once

#include <string>

namespace CLI {
class App;
}  // namespace CLI

namespace dst::aggregator {

struct ResyncRateArgs {
  std::string control;  // "" for DefaultControlPath()
  std::string volume;
  std::string min;  // as given: the aggregator parses and checks them
  std::string max;
};

CLI::App* AddResyncRateCommand(CLI::App& app, ResyncRateArgs* args);
int RunResyncRate(const ResyncRateArgs& args);

}  // namespace dst::aggregator
