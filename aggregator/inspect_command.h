// `dst-aggregator inspect`: prints the current superblock of each member named on the command
// line, which slot it came from and what the other slot holds (docs/aggregator.md "create and
// inspect"):
//
//   dst-aggregator inspect [--json] [member TLS options] URI...
//
// Contract: read-only; every member is inspected even when another fails. Text: one block per
// member with a valid superblock on stdout, and one `dst-aggregator: error: member URI: ...` line
// on stderr per member without one (unreachable, blank, both slots torn, a newer format).
// --json: exactly one JSON document on stdout, an array with one object per member in
// command-line order, errors included, and nothing on stderr. Exit code 0 when every member has a
// valid superblock, 1 otherwise. It does not check that the members form one volume: that is
// assembly's job (OrderMembers). The member TLS options (member_tls_options.h) are serve's; options
// that do not check out (a missing PSK file, no TLS member) stop inspect before any member is read,
// with one error line on stderr and exit code 1, --json or not: there is nothing to report on.
//
// Threading: runs on the calling thread, with blocking member I/O (member_metadata.h).
#pragma once

#include <string>
#include <vector>

#include "aggregator/member/member_tls.h"

namespace CLI {
class App;
}  // namespace CLI

namespace dst::aggregator {

struct InspectArgs {
  bool json = false;
  member::MemberTls tls;  // --member-tls-*: credentials for nbds:// and nbds+unix:// members
  std::vector<std::string> members;
};

// Adds the `inspect` subcommand to `app`, storing its options in *args (which must outlive the
// parse).
CLI::App* AddInspectCommand(CLI::App& app, InspectArgs* args);

// Inspects every member and returns the process exit code (0 or 1, see above).
int RunInspect(const InspectArgs& args);

}  // namespace dst::aggregator
