// `dst-aggregator member [--control PATH] fail|remove VOLUME SLOT` and
// `dst-aggregator member [--control PATH] set VOLUME SLOT write-mostly|readwrite`: asks a running
// aggregator over its control socket to fail a current copy of a mirror or raid10 volume, remove
// a copy that is out, or set a copy write-mostly or back (docs/redundancy.md, "Member commands").
// Prints the aggregator's "ok: ..." line; exits 1 with its error (or why it could not be asked)
// on stderr. The aggregator checks the volume, the slot and its state.
//
// Threading: blocking, on the calling thread.
#pragma once

#include <string>

namespace CLI {
class App;
}  // namespace CLI

namespace dst::aggregator {

struct MemberArgs {
  std::string control;  // "" for DefaultControlPath()
  std::string action;   // fail, remove, set
  std::string volume;
  std::string slot;
  std::string mode;  // set only: write-mostly or readwrite
};

CLI::App* AddMemberCommand(CLI::App& app, MemberArgs* args);
// The control request the arguments make ("member set vol0 1 write-mostly\n").
std::string MemberRequest(const MemberArgs& args);
int RunMember(const MemberArgs& args);

}  // namespace dst::aggregator
