#include "aggregator/inspect_command.h"

#include <cstdio>

#include <CLI/CLI.hpp>

#include "aggregator/integrity/member_metadata.h"
#include "aggregator/integrity/superblock_json.h"
#include "aggregator/member_tls_options.h"
#include "aggregator/serve_config.h"
#include "common/log.h"
#include "common/status.h"
#include "common/units.h"

namespace dst::aggregator {

namespace {

using integrity::JsonQuote;
using integrity::MemberReadResult;
using integrity::SlotReport;
using integrity::SlotState;

// One member: its URI, what was read, and why it has no usable superblock (if it has none).
struct Inspection {
  std::string uri;
  bool read = false;  // the slots were read (the member was reachable)
  MemberReadResult found;
  Status status;  // Ok() when found.choice holds the current superblock
};

Inspection Inspect(const std::string& uri, const member::MemberTls& tls) {
  Inspection in;
  in.uri = uri;
  in.status = CheckMemberUri(uri);
  if (in.status.ok()) in.status = integrity::ReadSuperblocks(uri, tls, &in.found);
  if (!in.status.ok()) return in;
  in.read = true;
  in.status = in.found.choice_status.Wrap("member " + uri);
  return in;
}

const SlotReport& OtherSlot(const Inspection& in) {
  return in.found.slots[1 - in.found.choice.slot];
}

// "valid (event 4)", "absent", "torn (superblock checksum mismatch: torn or corrupted)".
std::string OtherSlotText(const SlotReport& other) {
  const std::string name(integrity::SlotStateName(other.state));
  if (other.state == SlotState::kValid) {
    return name + " (event " + std::to_string(other.superblock.event) + ")";
  }
  if (other.state == SlotState::kAbsent) return name;
  return name + " (" + other.detail.message() + ")";
}

void PrintText(const Inspection& in, bool first) {
  const auto& choice = in.found.choice;
  std::printf("%s%s: slot %u in use, slot %u %s; export %s\n%s", first ? "" : "\n", in.uri.c_str(),
              choice.slot, 1 - choice.slot, OtherSlotText(OtherSlot(in)).c_str(),
              FormatSize(in.found.export_size).c_str(),
              integrity::SuperblockToText(choice.superblock).c_str());
}

std::string SlotStatesJson(const MemberReadResult& found) {
  return "[" + JsonQuote(integrity::SlotStateName(found.slots[0].state)) + "," +
         JsonQuote(integrity::SlotStateName(found.slots[1].state)) + "]";
}

std::string ErrorJson(const Inspection& in) {
  std::string out =
      "{\"uri\":" + JsonQuote(in.uri) + ",\"error\":" + JsonQuote(in.status.message());
  if (in.read) out += ",\"slots\":" + SlotStatesJson(in.found);
  return out + "}";
}

std::string MemberJson(const Inspection& in) {
  if (!in.status.ok()) return ErrorJson(in);
  const SlotReport& other = OtherSlot(in);
  std::string out = "{\"uri\":" + JsonQuote(in.uri) +
                    ",\"export_size\":" + std::to_string(in.found.export_size) +
                    ",\"slot\":" + std::to_string(in.found.choice.slot) +
                    ",\"other_slot\":" + JsonQuote(integrity::SlotStateName(other.state));
  if (other.state != SlotState::kValid && other.state != SlotState::kAbsent) {
    out += ",\"other_slot_error\":" + JsonQuote(other.detail.message());
  }
  return out + ",\"superblock\":" + integrity::SuperblockToJson(in.found.choice.superblock) + "}";
}

// One array, one member per line, so that both people and json.load can read it.
void PrintJson(const std::vector<Inspection>& inspections) {
  std::string out = "[\n";
  for (size_t i = 0; i < inspections.size(); ++i)
    out += MemberJson(inspections[i]) + (i + 1 < inspections.size() ? ",\n" : "\n");
  out += "]\n";
  std::fputs(out.c_str(), stdout);
}

}  // namespace

CLI::App* AddInspectCommand(CLI::App& app, InspectArgs* args) {
  CLI::App* inspect = app.add_subcommand("inspect", "print the superblocks of members");
  inspect->add_flag("--json", args->json, "one JSON document instead of text");
  AddMemberTlsOptions(*inspect, &args->tls);
  inspect->add_option("members", args->members, "member NBD URIs")->required();
  return inspect;
}

int RunInspect(const InspectArgs& args) {
  if (Status s = member::CheckMemberTls(args.tls, args.members); !s.ok()) {
    LOG_ERROR("%s", s.message().c_str());
    return 1;
  }
  std::vector<Inspection> inspections;
  bool all_valid = true;
  for (const std::string& uri : args.members) {
    inspections.push_back(Inspect(uri, args.tls));
    all_valid = all_valid && inspections.back().status.ok();
  }
  if (args.json) {
    PrintJson(inspections);
  } else {
    bool first = true;
    for (const Inspection& in : inspections) {
      if (!in.status.ok()) continue;
      PrintText(in, first);
      first = false;
    }
    std::fflush(stdout);
    for (const Inspection& in : inspections)
      if (!in.status.ok()) LOG_ERROR("%s", in.status.message().c_str());
  }
  std::fflush(stdout);
  return all_valid ? 0 : 1;
}

}  // namespace dst::aggregator
