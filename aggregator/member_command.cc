#include "aggregator/member_command.h"

#include <CLI/CLI.hpp>

#include "aggregator/command_error.h"
#include "aggregator/control_client.h"

namespace dst::aggregator {

CLI::App* AddMemberCommand(CLI::App& app, MemberArgs* args) {
  CLI::App* member = app.add_subcommand(
      "member", "fail, remove, set or add a copy (slot) of a volume of a running aggregator");
  AddControlOption(*member, &args->control);
  member->add_option("action", args->action, "fail, remove, set or add")
      ->required()
      ->check(CLI::IsMember({"fail", "remove", "set", "add"}));
  member->add_option("volume", args->volume, "the volume's name")->required();
  member
      ->add_option("slot", args->slot,
                   "the slot (member index); add: the new member's URI (an export of the "
                   "slot member's size)")
      ->required();
  member->add_option("mode", args->mode, "set: write-mostly or readwrite")
      ->check(CLI::IsMember({"write-mostly", "readwrite"}));
  member->add_option("--slot", args->add_slot,
                     "add: the slot to fill (default: the lowest that is stale, failed or "
                     "missing)");
  return member;
}

std::string MemberRequest(const MemberArgs& args) {
  std::string request = "member " + args.action + " " + args.volume + " " + args.slot;
  if (!args.mode.empty()) request += " " + args.mode;
  if (!args.add_slot.empty()) request += " " + args.add_slot;
  return request + "\n";
}

int RunMember(const MemberArgs& args) {
  if (args.action == "set" && args.mode.empty())
    return ExitWithError(Status::Invalid("member set needs write-mostly or readwrite"));
  if (args.action != "set" && !args.mode.empty())
    return ExitWithError(Status::Invalid("member " + args.action + " takes no mode"));
  if (args.action != "add" && !args.add_slot.empty())
    return ExitWithError(Status::Invalid("member " + args.action + " takes no --slot"));
  const bool add = args.action == "add";
  return RunControlCommand(args.control, MemberRequest(args),
                           add ? kMemberAddTimeout : kAnswerTimeout);
}

}  // namespace dst::aggregator
