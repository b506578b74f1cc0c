// `dst-aggregator inspect`: prints the current superblock of each member named on the command
// line, which slot it came from and what the other slot holds (docs/aggregator.md "create and
// inspect"):
//
//   dst-aggregator inspect [--json] URI...
//
// Contract: read-only; every member is inspected even when another fails. Text: one block per
// member with a valid superblock on stdout, and one `dst-aggregator: error: member URI: ...` line
// on stderr per member without one (unreachable, blank, both slots torn, a newer format).
// --json: exactly one JSON document on stdout, an array with one object per member in
// command-line order, errors included, and nothing on stderr. Exit code 0 when every member has a
// valid superblock, 1 otherwise. It does not check that the members form one volume: that is
// assembly's job (OrderMembers).
//
// Threading: runs on the calling thread, with blocking member I/O (member_metadata.h).
#pragma once

#include <string>
#include <vector>

namespace CLI {
class App;
}  // namespace CLI

namespace dst::aggregator {

struct InspectArgs {
  bool json = false;
  std::vector<std::string> members;
};

// Adds the `inspect` subcommand to `app`, storing its options in *args (which must outlive the
// parse).
CLI::App* AddInspectCommand(CLI::App& app, InspectArgs* args);

// Inspects every member and returns the process exit code (0 or 1, see above).
int RunInspect(const InspectArgs& args);

}  // namespace dst::aggregator
