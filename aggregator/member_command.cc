#include "aggregator/member_command.h"

#include <CLI/CLI.hpp>

#include "aggregator/command_error.h"
#include "aggregator/control_client.h"

namespace dst::aggregator {

CLI::App* AddMemberCommand(CLI::App& app, MemberArgs* args) {
  CLI::App* member = app.add_subcommand(
      "member",
      "fail, remove, set, add or replace a copy (slot) of a volume of a running aggregator");
  AddControlOption(*member, &args->control);
  member->add_option("action", args->action, "fail, remove, set, add or replace")
      ->required()
      ->check(CLI::IsMember({"fail", "remove", "set", "add", "replace"}));
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
  member->add_option("--with", args->with,
                     "replace: the new member's URI (an export of the slot member's size); the "
                     "slot's member serves until the new one is rebuilt");
  return member;
}

std::string MemberRequest(const MemberArgs& args) {
  std::string request = "member " + args.action + " " + args.volume + " " + args.slot;
  if (!args.mode.empty()) request += " " + args.mode;
  if (!args.add_slot.empty()) request += " " + args.add_slot;
  if (!args.with.empty()) request += " " + args.with;
  return request + "\n";
}

int RunMember(const MemberArgs& args) {
  if (args.action == "set" && args.mode.empty())
    return ExitWithError(Status::Invalid("member set needs write-mostly or readwrite"));
  if (args.action != "set" && !args.mode.empty())
    return ExitWithError(Status::Invalid("member " + args.action + " takes no mode"));
  if (args.action != "add" && !args.add_slot.empty())
    return ExitWithError(Status::Invalid("member " + args.action + " takes no --slot"));
  const bool replace = args.action == "replace";
  if (replace && args.with.empty())
    return ExitWithError(Status::Invalid("member replace needs --with URI (the new member)"));
  if (!replace && !args.with.empty())
    return ExitWithError(Status::Invalid("member " + args.action + " takes no --with"));
  const bool formats = args.action == "add" || replace;
  return RunControlCommand(args.control, MemberRequest(args),
                           formats ? kMemberAddTimeout : kAnswerTimeout);
}

}  // namespace dst::aggregator
