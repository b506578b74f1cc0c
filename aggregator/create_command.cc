#include "aggregator/create_command.h"

#include <string.h>  // explicit_bzero

#include <algorithm>
#include <bit>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <memory>
#include <optional>
#include <set>

#include <CLI/CLI.hpp>

#include "aggregator/integrity/assembly.h"
#include "aggregator/integrity/member_metadata.h"
#include "aggregator/integrity/superblock.h"
#include "aggregator/key_file.h"
#include "aggregator/member_tls_options.h"
#include "aggregator/serve_config.h"
#include "aggregator/volume/layout.h"
#include "aggregator/volume/set_geometry.h"
#include "aggregator/volume_key.h"
#include "common/block_cipher.h"
#include "common/key_slot.h"
#include "common/log.h"
#include "common/units.h"

namespace dst::aggregator {

namespace {

using integrity::MemberReadResult;
using integrity::Superblock;

// The options, parsed and checked.
struct CreatePlan {
  std::string name;
  volume::LayoutKind layout = volume::LayoutKind::kLinear;
  uint64_t chunk_size = 0;  // 0 for linear and mirror, as the superblock records it
  // Mirror and raid10: the sets of copies (format version 2). Linear and stripe: none (version 1).
  std::optional<volume::SetGeometry> sets;
  integrity::FormatParams params;
  integrity::KeyId key_id{};  // zero unless keyed or encrypted (then the key check)
  integrity::Uuid volume_uuid = integrity::NewUuid();
  bool encrypted = false;
  integrity::KeySlotBytes key_slot{};  // encrypted: slot 0, the master key sealed for the secret
  std::vector<std::string> uris;
  member::MemberTls tls;
  bool force = false;
};

// One member: what create found on it, and what it will hold.
struct PlannedMember {
  std::string uri;
  MemberReadResult found;
  Superblock superblock;
};

Status ParseSizeOption(std::string_view option, const std::string& text, uint64_t* out) {
  const auto size = ParseSize(text);
  if (!size) return Status::Invalid(std::string(option) + " " + text + ": not a size (e.g. 64K)");
  *out = *size;
  return Status::Ok();
}

Status ParseFormatOptions(const CreateArgs& args, CreatePlan* plan) {
  uint64_t block = 0;
  DST_RETURN_IF_ERROR(ParseSizeOption("--block-size", args.block_size, &block));
  if (block > integrity::kMaxBlockSize) {
    return Status::Invalid("--block-size " + args.block_size +
                           ": the block size is a power of two from 512 B to 64 KiB");
  }
  plan->params.block_size = static_cast<uint32_t>(block);
  DST_RETURN_IF_ERROR(
      ParseSizeOption("--region-size", args.region_size, &plan->params.region_size));
  // An encrypted volume's table holds MACs: blake2b-keyed unless told otherwise (and refused).
  const std::string checksum =
      !args.checksum.empty() ? args.checksum : (args.encrypt ? "blake2b-keyed" : "crc32c");
  const auto algorithm = ParseChecksumAlgorithm(checksum);
  if (!algorithm) {
    return Status::Invalid("--checksum " + checksum +
                           ": expected crc32c, blake2b or blake2b-keyed");
  }
  if (args.encrypt && *algorithm != ChecksumAlgorithm::kBlake2bKeyed)
    return Status::Invalid("--checksum " + checksum +
                           " cannot be combined with --encrypt: an encrypted volume "
                           "authenticates every block with a keyed MAC (blake2b-keyed)");
  plan->params.algorithm = *algorithm;
  // A keyed table is authenticated page by page (docs/format.md §9).
  plan->params.table_tags = *algorithm == ChecksumAlgorithm::kBlake2bKeyed;
  return integrity::ValidateFormatParams(plan->params);
}

bool IsStriped(volume::LayoutKind layout) {
  return layout == volume::LayoutKind::kStripe || layout == volume::LayoutKind::kRaid10;
}

// A chunk never splits a block, so a block never spans two members or sets (docs/format.md §1).
Status ParseLayoutOptions(const CreateArgs& args, CreatePlan* plan) {
  DST_RETURN_IF_ERROR(volume::ParseLayoutKind(args.layout, &plan->layout).Wrap("--layout"));
  if (!args.copies.empty() && !volume::IsRedundant(plan->layout))
    return Status::Invalid("--copies applies to --layout mirror and raid10 only");
  if (!IsStriped(plan->layout)) {
    if (!args.chunk.empty())
      return Status::Invalid("--chunk applies to --layout stripe and raid10 only");
    return Status::Ok();
  }
  plan->chunk_size = volume::kDefaultChunkSize;
  if (!args.chunk.empty())
    DST_RETURN_IF_ERROR(ParseSizeOption("--chunk", args.chunk, &plan->chunk_size));
  const uint64_t block = plan->params.block_size;
  if (!std::has_single_bit(plan->chunk_size) || plan->chunk_size < block ||
      plan->chunk_size > volume::kMaxChunkSize) {
    return Status::Invalid("--chunk " + FormatSize(plan->chunk_size) +
                           ": a chunk is a power of two from the block size (" + FormatSize(block) +
                           ") to 1 GiB");
  }
  return Status::Ok();
}

// Mirror and raid10: the copy count against the members given. Without --copies a mirror keeps
// one copy per member and a raid10 two, as md's raid10 does.
Status ParseCopies(const CreateArgs& args, CreatePlan* plan) {
  if (!volume::IsRedundant(plan->layout)) return Status::Ok();
  const auto members = static_cast<uint32_t>(plan->uris.size());
  uint32_t copies = plan->layout == volume::LayoutKind::kMirror ? members : volume::kMinCopies;
  std::string what = "--layout " + args.layout;
  if (!args.copies.empty()) {
    const char* end = args.copies.data() + args.copies.size();
    const auto [at, ec] = std::from_chars(args.copies.data(), end, copies);
    if (ec != std::errc() || at != end)
      return Status::Invalid("--copies " + args.copies + ": not a number of copies");
    what = "--copies " + args.copies;
  } else if (members < volume::kMinCopies) {
    return Status::Invalid(what + ": a mirror needs at least 2 members, one per copy");
  }
  volume::SetGeometry sets;
  DST_RETURN_IF_ERROR(volume::MakeSetGeometry(plan->layout, members, copies, &sets).Wrap(what));
  plan->sets = sets;
  return Status::Ok();
}

uint32_t FormatVersion(const CreatePlan& plan) {
  return plan.sets ? integrity::kFormatVersion2 : integrity::kFormatVersion1;
}

// A new random master key, sealed into key slot 0 for the secret given; only the slot and the key
// check are kept.
Status ParseEncryptionOptions(const CreateArgs& args, CreatePlan* plan) {
  uint8_t cost = ScryptParams{}.log2_n;
  if (!args.passphrase_cost.empty()) {
    const char* end = args.passphrase_cost.data() + args.passphrase_cost.size();
    const auto [at, ec] = std::from_chars(args.passphrase_cost.data(), end, cost);
    if (ec != std::errc() || at != end || cost < 10 || cost > kMaxScryptLog2N)
      return Status::Invalid("--passphrase-cost " + args.passphrase_cost +
                             ": scrypt's log2 N, 10 to " + std::to_string(kMaxScryptLog2N));
  }
  VolumeSecret secret;
  DST_RETURN_IF_ERROR(ReadVolumeSecret("--encrypt", args.key_file, args.passphrase_file, &secret));
  KeepKeysOutOfCoreDumps();
  const CryptoPP::SecByteBlock master = NewMasterKey();
  std::unique_ptr<BlockCipher> cipher;
  DST_RETURN_IF_ERROR(BlockCipher::Create({master.data(), master.size()}, &cipher));
  plan->key_id = cipher->Check(std::span<const uint8_t, 16>(plan->volume_uuid));
  Superblock sb;  // only for the slot's encoding
  sb.volume_uuid = plan->volume_uuid;
  ScryptParams scrypt;
  scrypt.log2_n = cost;
  DST_RETURN_IF_ERROR(SealIntoSlot(sb, 0, secret, {master.data(), master.size()}, scrypt));
  plan->key_slot = sb.key_slots[0];
  plan->encrypted = true;
  return Status::Ok();
}

// Only the key's identity is kept; the key itself is wiped once it has been used.
Status ParseKeyOptions(const CreateArgs& args, CreatePlan* plan) {
  if (!args.passphrase_cost.empty() && !args.encrypt)
    return Status::Invalid("--passphrase-cost is for --encrypt --passphrase-file");
  if (args.encrypt) return ParseEncryptionOptions(args, plan);
  if (!args.passphrase_file.empty())
    return Status::Invalid(
        "--passphrase-file is for --encrypt: checksum keys come from --key-file");
  const bool keyed = plan->params.algorithm == ChecksumAlgorithm::kBlake2bKeyed;
  if (!keyed) {
    if (args.key_file.empty()) return Status::Ok();
    return Status::Invalid("--key-file is only for --checksum blake2b-keyed");
  }
  if (args.key_file.empty()) return Status::Invalid("--checksum blake2b-keyed needs --key-file");
  std::vector<uint8_t> key;
  Status s = ReadKeyFile(args.key_file, &key);
  if (s.ok()) s = integrity::KeyIdentity(key, &plan->key_id).Wrap("--key-file " + args.key_file);
  if (!key.empty()) explicit_bzero(key.data(), key.size());
  return s;
}

Status CheckMemberList(const std::vector<std::string>& uris) {
  if (uris.empty()) return Status::Invalid("no members: give the member URIs in layout order");
  if (uris.size() > integrity::kMaxMembers) {
    return Status::Invalid("a volume has at most 64 members, not " + std::to_string(uris.size()));
  }
  std::set<std::string> seen;
  for (const std::string& uri : uris) {
    DST_RETURN_IF_ERROR(CheckMemberUri(uri));
    if (!seen.insert(uri).second) return Status::Invalid("member " + uri + " is given twice");
  }
  return Status::Ok();
}

Status ParseCreateArgs(const CreateArgs& args, CreatePlan* plan) {
  // The superblock checks the rest of the name rule (printable UTF-8) before anything is written.
  if (args.name.empty() || args.name.size() > integrity::kMaxNameLength) {
    return Status::Invalid("--name: a volume name is 1 to 64 bytes, not " +
                           std::to_string(args.name.size()));
  }
  plan->name = args.name;
  plan->uris = args.members;
  plan->tls = args.tls;
  plan->force = args.force;
  DST_RETURN_IF_ERROR(ParseFormatOptions(args, plan));
  DST_RETURN_IF_ERROR(ParseLayoutOptions(args, plan));
  DST_RETURN_IF_ERROR(ParseKeyOptions(args, plan));
  DST_RETURN_IF_ERROR(CheckMemberList(plan->uris));
  DST_RETURN_IF_ERROR(ParseCopies(args, plan));
  return member::CheckMemberTls(plan->tls, plan->uris);
}

// "member 1 of volume "vol0" 0123..." or, for a member without a usable superblock, why not.
std::string DescribeExisting(const MemberReadResult& found) {
  if (!found.choice_status.ok()) {
    return "a damaged dst superblock (" + found.choice_status.message() + ")";
  }
  const Superblock& sb = found.choice.superblock;
  return "a dst superblock: member " + std::to_string(sb.member_index) + " of volume \"" + sb.name +
         "\" " + integrity::FormatUuid(sb.volume_uuid);
}

Status CheckMember(const CreatePlan& plan, const std::string& uri, const MemberReadResult& found) {
  if (found.read_only) return Status::Error(EROFS, "member " + uri + " is read-only");
  const uint64_t unit = std::min<uint64_t>(plan.params.block_size, integrity::kSlotSize);
  if (found.min_block_size > unit) {
    return Status::Invalid("member " + uri + " needs I/O in units of " +
                           FormatSize(found.min_block_size) + ", more than " + FormatSize(unit));
  }
  if (!found.HasMagic() || plan.force) return Status::Ok();
  return Status::Error(EEXIST, "member " + uri + " already holds " + DescribeExisting(found) +
                                   ": use --force to overwrite it");
}

// Said only once every check has passed, right before the writes: until then nothing is
// overwritten.
void WarnAboutOverwrites(const std::vector<PlannedMember>& members) {
  for (const PlannedMember& m : members)
    if (m.found.HasMagic())
      LOG_WARNING("member %s: overwriting %s", m.uri.c_str(), DescribeExisting(m.found).c_str());
}

// Reads and checks every member before anything is written to any of them.
Status ExamineMembers(const CreatePlan& plan, std::vector<PlannedMember>* members) {
  for (const std::string& uri : plan.uris) {
    PlannedMember m;
    m.uri = uri;
    DST_RETURN_IF_ERROR(integrity::ReadSuperblocks(uri, plan.tls, &m.found));
    DST_RETURN_IF_ERROR(CheckMember(plan, uri, m.found));
    DST_RETURN_IF_ERROR(integrity::ComputeGeometry(m.found.export_size, plan.params,
                                                   FormatVersion(plan), &m.superblock.geometry)
                            .Wrap("member " + uri));
    members->push_back(std::move(m));
  }
  return Status::Ok();
}

// Mirror and raid10: every copy of a set gets the areas of the set's smallest copy, so that one
// member offset names the same table entry or data byte on each copy (a set is addressed as one
// member). member_size stays each export's own size, which assembly checks the export against.
Status ShareSetGeometry(const CreatePlan& plan, std::vector<PlannedMember>* members) {
  if (!plan.sets) return Status::Ok();
  for (uint32_t set = 0; set < plan.sets->sets(); ++set) {
    uint64_t smallest = UINT64_MAX;
    for (uint32_t copy = 0; copy < plan.sets->copies; ++copy)
      smallest = std::min(smallest, (*members)[plan.sets->MemberOf(set, copy)].found.export_size);
    for (uint32_t copy = 0; copy < plan.sets->copies; ++copy) {
      PlannedMember& m = (*members)[plan.sets->MemberOf(set, copy)];
      integrity::MemberGeometry shared;
      DST_RETURN_IF_ERROR(
          integrity::ComputeGeometry(smallest, plan.params, integrity::kFormatVersion2, &shared)
              .Wrap("set " + std::to_string(set)));
      shared.member_size = m.found.export_size;
      m.superblock.geometry = shared;
    }
  }
  return Status::Ok();
}

// The layout over the data areas gives the volume size (and refuses what cannot be striped). For
// mirror and raid10 it is the layout over the sets, each as large as its smallest copy.
Status ComputeVolumeSize(const CreatePlan& plan, const std::vector<PlannedMember>& members,
                         std::unique_ptr<volume::Layout>* layout) {
  std::vector<uint64_t> sizes;
  for (const PlannedMember& m : members) {
    const uint64_t data = m.superblock.geometry.data.size;
    if (IsStriped(plan.layout) && data < plan.chunk_size) {
      return Status::Invalid("member " + m.uri + ": its data area (" + FormatSize(data) +
                             ") is smaller than one chunk (" + FormatSize(plan.chunk_size) + ")");
    }
    sizes.push_back(data);
  }
  if (plan.sets) return volume::MakeSetLayout(*plan.sets, sizes, plan.chunk_size, layout);
  return volume::MakeLayout(plan.layout, sizes, plan.chunk_size, layout);
}

// Version 2: every slot active and owned by its member, one new generation with no history, the
// maps clear since event 0 (the create), no owner yet.
void PlanCopies(const CreatePlan& plan, std::vector<PlannedMember>* members) {
  if (!plan.sets) return;
  const integrity::Uuid generation = integrity::NewUuid();
  for (PlannedMember& m : *members) {
    Superblock& sb = m.superblock;
    sb.version = integrity::kFormatVersion2;
    sb.copies = plan.sets->copies;
    sb.generation = generation;
    sb.map_epoch = 0;
    sb.ownership_epoch = 0;
    for (uint32_t i = 0; i < members->size(); ++i)
      sb.slot_members[i] = (*members)[i].superblock.member_uuid;
  }
}

uint64_t SecondsSinceEpoch() {
  const auto now = std::chrono::system_clock::now().time_since_epoch();
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::seconds>(now).count());
}

// Fills every member's superblock (geometry is already there) and checks that each encodes.
Status PlanSuperblocks(const CreatePlan& plan, uint64_t volume_size,
                       std::vector<PlannedMember>* members) {
  const integrity::Uuid volume_uuid = plan.volume_uuid;
  const uint64_t created = SecondsSinceEpoch();
  const auto count = static_cast<uint32_t>(members->size());
  for (PlannedMember& m : *members)
    m.superblock.member_uuid = integrity::NewUuid();
  PlanCopies(plan, members);
  for (uint32_t i = 0; i < count; ++i) {
    Superblock& sb = (*members)[i].superblock;
    sb.created = created;
    sb.volume_uuid = volume_uuid;
    sb.name = plan.name;
    sb.member_index = i;
    sb.member_count = count;
    sb.layout = plan.layout;
    sb.chunk_size = plan.chunk_size;
    sb.state = integrity::VolumeState::kClean;
    sb.volume_size = volume_size;
    sb.key_id = plan.key_id;
    if (plan.params.table_tags) sb.flags |= integrity::kFlagTableTags;
    if (plan.encrypted) {
      sb.flags |= integrity::kFlagEncrypted;
      sb.key_slots[0] = plan.key_slot;
    }
    std::fill_n(sb.member_states.begin(), count, integrity::MemberState::kActive);
    DST_RETURN_IF_ERROR(integrity::ValidateSuperblock(sb).Wrap(
        "cannot make the superblock of member " + (*members)[i].uri));
  }
  return Status::Ok();
}

// Reading every member back catches two URIs that reach the same export: the later write wins,
// and the earlier member then holds the other's superblock.
Status VerifyMember(const PlannedMember& m, const member::MemberTls& tls) {
  MemberReadResult back;
  DST_RETURN_IF_ERROR(integrity::ReadSuperblocks(m.uri, tls, &back));
  if (!back.choice_status.ok()) {
    return back.choice_status.Wrap("member " + m.uri + ": reading back the new superblock");
  }
  Superblock expected = m.superblock;
  expected.event = 1;
  if (back.choice.superblock == expected) return Status::Ok();
  return Status::Error(EIO, "member " + m.uri + " does not read back the superblock written to it" +
                                " (it holds member " +
                                std::to_string(back.choice.superblock.member_index) + " " +
                                integrity::FormatUuid(back.choice.superblock.member_uuid) +
                                "): do two URIs name the same export?");
}

// "stripe, chunk 64 KiB", "mirror, 2 copies", "raid10, chunk 64 KiB, 2 copies x 3 sets".
std::string LayoutText(const CreatePlan& plan) {
  std::string text(volume::LayoutKindName(plan.layout));
  if (IsStriped(plan.layout)) text += ", chunk " + FormatSize(plan.chunk_size);
  if (plan.sets) {
    text += ", " + std::to_string(plan.sets->copies) + " copies";
    if (plan.sets->sets() > 1) text += " x " + std::to_string(plan.sets->sets()) + " sets";
  }
  return text;
}

// The volume bytes member i holds: its set's for mirror and raid10, its own otherwise.
uint64_t UsedBytes(const CreatePlan& plan, const volume::Layout& layout, uint32_t member) {
  return layout.member_usable_size(plan.sets ? plan.sets->SetOf(member) : member);
}

// ", set 1 copy 0" for mirror and raid10 members.
std::string CopyText(const CreatePlan& plan, uint32_t member) {
  if (!plan.sets) return "";
  return ", set " + std::to_string(plan.sets->SetOf(member)) + " copy " +
         std::to_string(plan.sets->CopyOf(member));
}

void PrintSummary(const CreatePlan& plan, const std::vector<PlannedMember>& members,
                  const volume::Layout& layout) {
  const Superblock& first = members.front().superblock;
  std::printf("volume:   \"%s\" %s\n", plan.name.c_str(),
              integrity::FormatUuid(first.volume_uuid).c_str());
  std::printf("layout:   %s, %zu members, %s (%llu bytes)\n", LayoutText(plan).c_str(),
              members.size(), FormatSize(layout.size()).c_str(),
              static_cast<unsigned long long>(layout.size()));
  std::printf("format:   version %u, block %s, region %s, checksum %s\n", FormatVersion(plan),
              FormatSize(plan.params.block_size).c_str(),
              FormatSize(plan.params.region_size).c_str(),
              ChecksumAlgorithmName(plan.params.algorithm));
  if (plan.encrypted)
    std::printf("encryption: aes-256-xts, key slot 0: %s\n",
                plan.key_slot[0] == static_cast<uint8_t>(KeySlotKind::kPassphrase) ? "passphrase"
                                                                                   : "key-file");
  if (plan.sets) std::printf("generation: %s\n", integrity::FormatUuid(first.generation).c_str());
  for (uint32_t i = 0; i < members.size(); ++i) {
    const Superblock& sb = members[i].superblock;
    std::printf("member %u: %s %s%s, data %s at %s, %s used\n", i, members[i].uri.c_str(),
                integrity::FormatUuid(sb.member_uuid).c_str(), CopyText(plan, i).c_str(),
                FormatSize(sb.geometry.data.size).c_str(),
                FormatSize(sb.geometry.data.offset).c_str(),
                FormatSize(UsedBytes(plan, layout, i)).c_str());
  }
  std::fflush(stdout);
}

}  // namespace

CLI::App* AddCreateCommand(CLI::App& app, CreateArgs* args) {
  CLI::App* create = app.add_subcommand("create", "format members as a new volume");
  create->add_option("--name", args->name, "volume name (1 to 64 bytes)")->required();
  create->add_option("--layout", args->layout, "linear, stripe, mirror or raid10")
      ->capture_default_str();
  create->add_option("--copies", args->copies,
                     "mirror and raid10: copies of every block (mirror: default one per member; "
                     "raid10: default 2)");
  create->add_option("--chunk", args->chunk,
                     "stripe and raid10 chunk size (power of two, default 64K)");
  create->add_option("--block-size", args->block_size, "checksummed block size")
      ->capture_default_str();
  create->add_option("--region-size", args->region_size, "write-intent bitmap region size")
      ->capture_default_str();
  create->add_option("--checksum", args->checksum,
                     "crc32c, blake2b or blake2b-keyed (default crc32c; blake2b-keyed, the only "
                     "choice, with --encrypt)");
  create->add_option("--key-file", args->key_file,
                     "blake2b-keyed: file holding the key; --encrypt: a key file that opens key "
                     "slot 0");
  create->add_flag("--encrypt", args->encrypt,
                   "encrypt the volume (AES-256-XTS, MACs in the table): a new master key, "
                   "sealed in key slot 0 for --key-file or --passphrase-file");
  create->add_option("--passphrase-file", args->passphrase_file,
                     "--encrypt: file holding the passphrase that opens key slot 0");
  create->add_option("--passphrase-cost", args->passphrase_cost,
                     "--encrypt: scrypt's cost for the passphrase, log2 N (default 17: 128 MiB, "
                     "about a second)");
  create->add_flag("--force", args->force, "overwrite members that hold a dst superblock");
  AddMemberTlsOptions(*create, &args->tls);
  create->add_option("members", args->members, "member NBD URIs, in layout order")->required();
  return create;
}

Status RunCreate(const CreateArgs& args) {
  CreatePlan plan;
  DST_RETURN_IF_ERROR(ParseCreateArgs(args, &plan));
  std::vector<PlannedMember> members;
  DST_RETURN_IF_ERROR(ExamineMembers(plan, &members));
  DST_RETURN_IF_ERROR(ShareSetGeometry(plan, &members));
  std::unique_ptr<volume::Layout> layout;
  DST_RETURN_IF_ERROR(ComputeVolumeSize(plan, members, &layout));
  DST_RETURN_IF_ERROR(PlanSuperblocks(plan, layout->size(), &members));
  WarnAboutOverwrites(members);
  for (const PlannedMember& m : members)
    DST_RETURN_IF_ERROR(integrity::WriteNewMember(m.uri, plan.tls, m.superblock));
  for (const PlannedMember& m : members)
    DST_RETURN_IF_ERROR(VerifyMember(m, plan.tls));
  PrintSummary(plan, members, *layout);
  return Status::Ok();
}

}  // namespace dst::aggregator
