// `dst-aggregator create`: formats the members of a new volume in the member format
// (docs/format.md, docs/aggregator.md "create and inspect"): version 1 for linear and stripe
// volumes, version 2 for mirror and raid10 ones.
//
//   dst-aggregator create --name NAME [--layout linear|stripe|mirror|raid10] [--copies K]
//                         [--chunk SIZE] [--block-size SIZE] [--region-size SIZE]
//                         [--checksum crc32c|blake2b|blake2b-keyed] [--key-file FILE] [--force]
//                         [--encrypt (--key-file FILE | --passphrase-file FILE)
//                          [--passphrase-cost LOG2N]]
//                         [member TLS options] URI...
//
// A mirror keeps K copies on its K members (K defaults to the member count); a raid10 of N members
// keeps K copies (default 2) on each of N / K sets, member i being copy i % K of set i / K, and
// stripes over the sets.
//
// The member TLS options (--member-tls-psk etc., member_tls_options.h) are serve's: TLS members
// are formatted over TLS with the same credentials.
//
// Contract: either every member is formatted (and read back) or the command fails with one error
// line naming the option or member at fault. Everything that can be checked without writing is
// checked, on every member, before the first write: the options, that every member is reachable,
// writable, large enough, and holds no dst superblock (any slot with the magic, valid or torn)
// unless --force. Members are numbered in command-line order. The data areas are zeroed.
// A failure during the writes (a member dying halfway) can leave some members formatted and
// others not; the error says which member failed, and running create again (with --force) redoes
// them all.
//
// Threading: runs on the calling thread, with blocking member I/O (member_metadata.h).
#pragma once

#include <string>
#include <vector>

#include "aggregator/member/member_tls.h"
#include "common/status.h"

namespace CLI {
class App;
}  // namespace CLI

namespace dst::aggregator {

// The options as given; RunCreate parses and checks them.
struct CreateArgs {
  std::string name;
  std::string layout = "linear";  // as serve: members concatenated unless asked otherwise
  std::string chunk;              // stripe and raid10; empty: volume::kDefaultChunkSize
  std::string copies;             // mirror and raid10; empty: the layout's default
  std::string block_size = "4K";
  std::string region_size = "4M";
  std::string checksum;         // empty: crc32c, or blake2b-keyed with --encrypt
  std::string key_file;         // blake2b-keyed: the checksum key; --encrypt: opens key slot 0
  bool encrypt = false;         // docs/encryption.md
  std::string passphrase_file;  // --encrypt: opens key slot 0
  std::string passphrase_cost;  // --encrypt --passphrase-file: scrypt's log2 N

  bool force = false;
  member::MemberTls tls;  // --member-tls-*: credentials for nbds:// and nbds+unix:// members
  std::vector<std::string> members;
};

// Adds the `create` subcommand to `app`, storing its options in *args (which must outlive the
// parse).
CLI::App* AddCreateCommand(CLI::App& app, CreateArgs* args);

// Formats the members and prints a summary of the new volume on stdout.
Status RunCreate(const CreateArgs& args);

}  // namespace dst::aggregator
