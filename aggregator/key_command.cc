#include "aggregator/key_command.h"

#include <cstdio>
#include <filesystem>

#include <CLI/CLI.hpp>

#include "aggregator/control_client.h"

namespace dst::aggregator {

CLI::App* AddKeyCommand(CLI::App& app, KeyArgs* args) {
  CLI::App* key =
      app.add_subcommand("key", "list, add or remove the key slots of an encrypted volume");
  AddControlOption(*key, &args->control);
  key->add_option("action", args->action, "list, add or remove")
      ->required()
      ->check(CLI::IsMember({"list", "add", "remove"}));
  key->add_option("volume", args->volume, "the volume's name")->required();
  key->add_option("slot", args->slot, "remove: the key slot (0 to 7)");
  CLI::Option* file =
      key->add_option("--key-file", args->key_file, "add: a key file that opens the new slot");
  CLI::Option* pass = key->add_option("--passphrase-file", args->passphrase_file,
                                      "add: a file holding the passphrase that opens the new slot");
  file->excludes(pass);
  key->add_option("--passphrase-cost", args->passphrase_cost,
                  "add --passphrase-file: scrypt's cost, log2 N (default 17)");
  return key;
}

std::string KeyRequest(const KeyArgs& args, std::string* error) {
  const std::string secret = !args.key_file.empty() ? args.key_file : args.passphrase_file;
  if (args.action != "add" && (!secret.empty() || !args.passphrase_cost.empty())) {
    *error = "--key-file, --passphrase-file and --passphrase-cost are for key add";
    return "";
  }
  if ((args.action == "remove") != !args.slot.empty()) {
    *error = "key remove takes the slot, and only it";
    return "";
  }
  if (args.action == "list") return "key list " + args.volume + "\n";
  if (args.action == "remove") return "key remove " + args.volume + " " + args.slot + "\n";
  if (secret.empty()) {
    *error = "key add needs --key-file or --passphrase-file";
    return "";
  }
  if (!args.passphrase_cost.empty() && args.passphrase_file.empty()) {
    *error = "--passphrase-cost is for --passphrase-file";
    return "";
  }
  // The aggregator reads the file: from its own working directory, a relative path would name
  // another file. Spaces would split the request.
  const std::string path = std::filesystem::absolute(secret).lexically_normal().string();
  if (path.find_first_of(" \t\n") != std::string::npos) {
    *error = "the secret's path must not contain spaces: " + path;
    return "";
  }
  std::string request = "key add " + args.volume + " " +
                        (args.key_file.empty() ? "passphrase-file " : "key-file ") + path;
  if (!args.passphrase_cost.empty()) request += " " + args.passphrase_cost;
  return request + "\n";
}

int RunKey(const KeyArgs& args) {
  std::string error;
  const std::string request = KeyRequest(args, &error);
  if (request.empty()) {
    std::fprintf(stderr, "dst-aggregator: error: %s\n", error.c_str());
    return 1;
  }
  return RunControlCommand(args.control, request);
}

}  // namespace dst::aggregator
