#include "aggregator/member_command.h"

#include <CLI/CLI.hpp>

#include "aggregator/command_error.h"
#include "aggregator/control_client.h"

namespace dst::aggregator {

CLI::App* AddMemberCommand(CLI::App& app, MemberArgs* args) {
  CLI::App* member = app.add_subcommand(
      "member", "fail, remove or set a copy (slot) of a volume of a running aggregator");
  AddControlOption(*member, &args->control);
  member->add_option("action", args->action, "fail, remove or set")
      ->required()
      ->check(CLI::IsMember({"fail", "remove", "set"}));
  member->add_option("volume", args->volume, "the volume's name")->required();
  member->add_option("slot", args->slot, "the slot (member index)")->required();
  member->add_option("mode", args->mode, "set: write-mostly or readwrite")
      ->check(CLI::IsMember({"write-mostly", "readwrite"}));
  return member;
}

std::string MemberRequest(const MemberArgs& args) {
  std::string request = "member " + args.action + " " + args.volume + " " + args.slot;
  if (!args.mode.empty()) request += " " + args.mode;
  return request + "\n";
}

int RunMember(const MemberArgs& args) {
  if (args.action == "set" && args.mode.empty())
    return ExitWithError(Status::Invalid("member set needs write-mostly or readwrite"));
  if (args.action != "set" && !args.mode.empty())
    return ExitWithError(Status::Invalid("member " + args.action + " takes no mode"));
  return RunControlCommand(args.control, MemberRequest(args));
}

}  // namespace dst::aggregator
