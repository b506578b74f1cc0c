#include "aggregator/volume_command.h"

#include <cstdio>
#include <filesystem>

#include <CLI/CLI.hpp>

#include "aggregator/cluster/catalog_remove.h"
#include "aggregator/command_error.h"
#include "aggregator/control_client.h"

namespace dst::aggregator {

CLI::App* AddVolumeCommand(CLI::App& app, VolumeArgs* args) {
  CLI::App* volume = app.add_subcommand(
      "volume", "list the volumes of a running aggregator, remove one or add one");
  AddControlOption(*volume, &args->control);
  volume
      ->add_option("action", args->action,
                   "list: one line per volume (name, layout, size, clients, state); remove: "
                   "close a volume and release its members while the others serve; add: serve a "
                   "new volume from its members")
      ->required()
      ->check(CLI::IsMember({"list", "remove", "add"}));
  volume->add_option("name", args->name, "remove, add: the volume");
  volume->add_option("members", args->members,
                     "add: the member URIs (assembled: in any order; raw: in layout order)");
  volume->add_flag("--raw", args->raw, "add: serve the members as they are, with --layout");
  volume->add_option("--layout", args->layout, "add, raw: linear (default) or stripe");
  volume->add_option("--chunk", args->chunk, "add, raw, stripe: the chunk size (default 64K)");
  volume->add_option("--key-file", args->key_file,
                     "add: the checksum key of a keyed volume, or a key file that opens a key slot "
                     "of an encrypted one");
  volume->add_option("--passphrase-file", args->passphrase_file,
                     "add: a file holding a passphrase that opens a key slot of an encrypted "
                     "volume");
  volume->add_flag("--allow-degraded", args->allow_degraded,
                   "add, mirror and raid10: serve without a current member");
  volume->add_flag("--no-auto-resync", args->no_auto_resync,
                   "add, mirror and raid10: leave a stale copy stale");
  volume->add_option("--discard", args->discard,
                     "add, mirror and raid10: set slot SLOT aside to be rebuilt from the others");
  volume->add_flag("--json", args->json, "list: print JSON instead of lines");
  volume->add_flag("--force", args->force,
                   "remove: end the volume's clients (their requests in flight complete, later "
                   "ones get ESHUTDOWN) instead of refusing while any is connected; remove "
                   "--cluster: also remove a \"creating\" record that names no create");
  CLI::Option* cluster = cluster::AddClusterOptions(
      *volume, &args->cluster,
      "remove: remove the volume from the cluster catalog and free its exports (refused while "
      "a serve owns it or a create of it runs)");
  cluster->excludes(volume->get_option("--control"));
  return volume;
}

namespace {

std::string AbsolutePath(const std::string& path) {
  return std::filesystem::absolute(path).lexically_normal().string();
}

}  // namespace

std::string VolumeRequest(const VolumeArgs& args) {
  if (args.action == "add") {
    std::string request = "volume add " + args.name;
    if (args.raw) request += " raw=true";
    if (!args.layout.empty()) request += " layout=" + args.layout;
    if (!args.chunk.empty()) request += " chunk=" + args.chunk;
    // The aggregator reads these files: from its own working directory, a relative path would
    // name another file.
    if (!args.key_file.empty()) request += " key-file=" + AbsolutePath(args.key_file);
    if (!args.passphrase_file.empty())
      request += " passphrase-file=" + AbsolutePath(args.passphrase_file);
    if (args.allow_degraded) request += " allow-degraded=true";
    if (args.no_auto_resync) request += " auto-resync=false";
    if (!args.discard.empty()) request += " discard=" + args.discard;
    for (const std::string& uri : args.members)
      request += " " + uri;
    return request + "\n";
  }
  if (args.action == "remove")
    return "volume remove " + args.name + (args.force ? " force" : "") + "\n";
  return std::string("volume list") + (args.json ? " json" : "") + "\n";
}

namespace {

// Why the arguments of `volume add` cannot make a request (Ok: they can). The aggregator checks
// the rest, as it checks the configuration file.
Status CheckAddArgs(const VolumeArgs& args) {
  if (args.name.empty() || args.members.empty())
    return Status::Invalid("volume add needs the volume's name and its member URIs");
  if (args.json) return Status::Invalid("volume add takes no --json");
  if (args.force) return Status::Invalid("volume add takes no --force");
  for (const std::string& word : args.members)
    if (word.find("://") == std::string::npos)
      return Status::Invalid("volume add: not a member URI: '" + word + "'");
  std::vector<std::string> words = {args.name,     args.layout,          args.chunk,
                                    args.key_file, args.passphrase_file, args.discard};
  words.insert(words.end(), args.members.begin(), args.members.end());
  for (const std::string& word : words)
    if (word.find_first_of(" \t\n") != std::string::npos)
      return Status::Invalid("volume add: the name, the key file and the URIs may not hold spaces");
  return Status::Ok();
}

}  // namespace

namespace {

// volume remove NAME --cluster URL [--force].
int RemoveFromCatalog(const VolumeArgs& args) {
  std::unique_ptr<cluster::CatalogClient> catalog;
  if (Status s = cluster::OpenCatalog(args.cluster, &catalog); !s.ok()) return ExitWithError(s);
  cluster::RemovedVolume removed;
  if (Status s = cluster::RemoveVolume(*catalog, args.name, args.force, &removed); !s.ok())
    return ExitWithError(s);
  std::string freed;
  for (const std::string& uri : removed.freed)
    freed += (freed.empty() ? "" : ", ") + uri;
  std::printf("volume %s (%s) removed from the catalog at %s; exports freed: %s\n",
              args.name.c_str(), removed.record.state.c_str(), catalog->url().ToString().c_str(),
              freed.empty() ? "none" : freed.c_str());
  std::fflush(stdout);
  return 0;
}

}  // namespace

int RunVolume(const VolumeArgs& args) {
  if (Status s = cluster::CheckClusterArgs(args.cluster); !s.ok()) return ExitWithError(s);
  if (args.cluster.given() && args.action != "remove")
    return ExitWithError(Status::Invalid("volume " + args.action +
                                         " asks a running aggregator: --cluster is for remove"));
  if (args.action == "add") {
    if (Status s = CheckAddArgs(args); !s.ok()) return ExitWithError(s);
    return RunControlCommand(args.control, VolumeRequest(args), kVolumeAddTimeout);
  }
  if (!args.members.empty())
    return ExitWithError(Status::Invalid("volume " + args.action + " takes one name at most"));
  const bool has_add_options = args.raw || !args.layout.empty() || !args.chunk.empty() ||
                               !args.key_file.empty() || !args.passphrase_file.empty() ||
                               args.allow_degraded || args.no_auto_resync || !args.discard.empty();
  if (has_add_options)
    return ExitWithError(Status::Invalid("volume " + args.action + " takes no volume add options"));
  const bool remove = args.action == "remove";
  if (remove && args.name.empty())
    return ExitWithError(Status::Invalid("volume remove needs the volume's name"));
  if (!remove && !args.name.empty())
    return ExitWithError(Status::Invalid("volume list takes no name"));
  if (remove && args.json) return ExitWithError(Status::Invalid("volume remove takes no --json"));
  if (!remove && args.force) return ExitWithError(Status::Invalid("volume list takes no --force"));
  if (remove && args.cluster.given()) return RemoveFromCatalog(args);
  if (remove) return RunControlCommand(args.control, VolumeRequest(args), kVolumeRemoveTimeout);
  std::string answer;
  const Status s = AskControl(args.control, VolumeRequest(args), &answer);
  if (!s.ok()) return ExitWithError(s);
  if (answer.rfind("error: ", 0) == 0) {
    while (!answer.empty() && answer.back() == '\n')
      answer.pop_back();
    return ExitWithError(Status::Invalid(answer.substr(std::string("error: ").size())));
  }
  std::fwrite(answer.data(), 1, answer.size(), stdout);
  return 0;
}

}  // namespace dst::aggregator
