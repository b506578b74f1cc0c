// `dst-aggregator member [--control PATH] fail|remove VOLUME SLOT`,
// `dst-aggregator member [--control PATH] set VOLUME SLOT write-mostly|readwrite` and
// `dst-aggregator member [--control PATH] add VOLUME URI [--slot S]` and
// `dst-aggregator member [--control PATH] replace VOLUME SLOT --with URI`: asks a running
// aggregator over its control socket to fail a current copy of a mirror or raid10 volume, remove a
// copy that is out, set a copy write-mostly or back, format a new export as the member of a slot
// that is out and rebuild it, or rebuild a new export beside a current member that it then
// replaces (docs/redundancy.md, "Member commands"). Prints the aggregator's "ok: ..."
// line; exits 1 with its error (or why it could not be asked) on stderr. The aggregator checks
// the volume, the slot and its state (and, for add, the export).
//
// Threading: blocking, on the calling thread.
#pragma once

#include <chrono>
#include <string>

namespace CLI {
class App;
}  // namespace CLI

namespace dst::aggregator {

// How long `member add` and `member replace` wait for their answer: the aggregator formats the
// export (zeroing its metadata and data area) before it answers.
inline constexpr std::chrono::milliseconds kMemberAddTimeout{600000};

struct MemberArgs {
  std::string control;  // "" for DefaultControlPath()
  std::string action;   // fail, remove, set, add, replace
  std::string volume;
  std::string slot;      // fail, remove, set, replace: the slot; add: the new member's URI
  std::string mode;      // set only: write-mostly or readwrite
  std::string add_slot;  // add only: --slot, "" for the lowest slot that is out
  std::string with;      // replace only: --with, the new member's URI
};

CLI::App* AddMemberCommand(CLI::App& app, MemberArgs* args);
// The control request the arguments make ("member set vol0 1 write-mostly\n").
std::string MemberRequest(const MemberArgs& args);
int RunMember(const MemberArgs& args);

}  // namespace dst::aggregator
