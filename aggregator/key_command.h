// `dst-aggregator key [--control PATH] list|add|remove VOLUME ...`: the key slots of an encrypted
// volume served by a running aggregator (docs/encryption.md, "Key slots"):
//   key list VOLUME
//   key add VOLUME (--key-file FILE | --passphrase-file FILE) [--passphrase-cost LOG2N]
//   key remove VOLUME SLOT
// The aggregator reads the new secret's file itself (the path is made absolute here), so that no
// secret crosses the control socket. Prints the aggregator's answer; exits 1 with its error (or
// why it could not be asked) on stderr.
//
// Threading: blocking, on the calling thread.
#pragma once

#include <string>

namespace CLI {
class App;
}  // namespace CLI

namespace dst::aggregator {

struct KeyArgs {
  std::string control;  // "" for DefaultControlPath()
  std::string action;   // list, add, remove
  std::string volume;
  std::string slot;  // remove
  std::string key_file;
  std::string passphrase_file;
  std::string passphrase_cost;
};

CLI::App* AddKeyCommand(CLI::App& app, KeyArgs* args);
// The control request the arguments make ("key add vol0 passphrase-file /etc/dst/p 17\n"), or ""
// with *error set when they do not make one.
std::string KeyRequest(const KeyArgs& args, std::string* error);
int RunKey(const KeyArgs& args);

}  // namespace dst::aggregator
