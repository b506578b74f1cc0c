// `dst-aggregator scrub [--control PATH] VOLUME start [--check|--repair] | pause | resume | stop`:
// asks a running aggregator over its control socket to start, pause, resume or stop the scrub of
// a checksummed volume (docs/redundancy.md, "Scrub"). Prints the aggregator's "ok: ..." line;
// exits 1 with its error (or why it could not be asked) on stderr.
//
// Threading: blocking, on the calling thread.
#pragma once

#include <string>

namespace CLI {
class App;
}  // namespace CLI

namespace dst::aggregator {

struct ScrubArgs {
  std::string control;  // "" for DefaultControlPath()
  std::string volume;
  std::string action;  // start, pause, resume, stop
  bool check = false;
  bool repair = false;
};

CLI::App* AddScrubCommand(CLI::App& app, ScrubArgs* args);
// The control request the arguments make ("scrub vol0 start repair\n").
std::string ScrubRequest(const ScrubArgs& args);
int RunScrub(const ScrubArgs& args);

}  // namespace dst::aggregator
