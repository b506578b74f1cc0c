// Shared pieces of the tests that format volumes in the member format with
// `dst-aggregator create`, look at them with `inspect` and serve them (the
// metadata, checksum, mirror, scrub and member integration suites, the
// fault_crash suite): members served by our plugin on sparse temp files, the
// dst-aggregator command line run with a sanitizer check on its stderr, and
// `dst-aggregator serve` checked for a clean stop.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "tests/harness/aggregator_process.h"
#include "tests/integration/plugin_fixture.h"

namespace dst::test {

// Plugin exports on sparse temp files ("member0.img", ...), one nbdkit
// (PluginServer) each, in the order given.
class FileMembers {
 public:
  // One member of each size: FileMembers m({4 * kMiB, 8 * kMiB}).
  explicit FileMembers(std::initializer_list<uint64_t> sizes);
  // `count` members of `size` bytes each.
  explicit FileMembers(size_t count, uint64_t size);

  const std::vector<std::string>& uris() const { return uris_; }
  const std::string& uri(size_t i) const { return uris_[i]; }
  // The backing file of member i.
  const std::string& file(size_t i) const { return files_[i]; }
  // The directory the backing files are in, for other files of the test.
  const TempDir& dir() const { return dir_; }
  // Whether every backing file holds only zero bytes.
  bool AllBlank() const;

 private:
  void Add(uint64_t size);

  TempDir dir_{"dst-vol-members"};
  std::vector<std::unique_ptr<PluginServer>> servers_;
  std::vector<std::string> uris_;
  std::vector<std::string> files_;
};

// a followed by b.
std::vector<std::string> Concat(std::vector<std::string> a, const std::vector<std::string>& b);

// Runs dst-aggregator with `args` (30 s at most) and checks that no sanitizer
// complained on its stderr. LeakSanitizer is off for it (volume_fixture.cc).
CommandResult RunAggregator(const std::vector<std::string>& args);

// `dst-aggregator status --json` of a running aggregator (must exit 0).
std::string StatusJson(const AggregatorServer& aggregator);

// `dst-aggregator create OPTIONS... URIS...`, which may fail.
CommandResult Create(const std::vector<std::string>& options, const std::vector<std::string>& uris);

// create with these options must succeed (exit code 0, else the case stops
// there, showing its output).
CommandResult CreateOk(const std::vector<std::string>& options,
                       const std::vector<std::string>& uris);

// `dst-aggregator serve ARGS...` on a Unix socket in the server's directory.
AggregatorOptions ServeOptions(std::vector<std::string> args);

// `dst-aggregator serve ARGS...` for the length of a case. Stop() (or the
// destructor) requires what a clean stop looks like: exit code 0 after
// SIGTERM, no sanitizer report and, when `clean_volume` names a volume, that
// volume marked clean ("volume NAME: stopped clean").
class Served : public AggregatorServer {
 public:
  explicit Served(std::vector<std::string> args, std::string clean_volume = "");
  ~Served();

  // Stops the aggregator and checks the above, once: later calls do nothing.
  // It hides AggregatorServer::Stop, so that a case that stops the
  // aggregator half-way gets the checks at that point.
  void Stop();

 private:
  std::string clean_volume_;
  bool stopped_ = false;
};

// A control command (member, volume, scrub, ...) that answered exactly `answer` and exited 0.
void CheckCommandOk(const CommandResult& r, const std::string& answer);
// A control command that was refused: exit 1, nothing on stdout, and an `error: ERROR...` line on
// stderr.
void CheckCommandRefused(const CommandResult& r, const std::string& error);

// A serve command line the aggregator must refuse: it exits 1 with exactly one line on stderr,
// the error, naming every needle.
void CheckServeRefused(const std::vector<std::string>& args,
                       std::initializer_list<std::string_view> needles);

}  // namespace dst::test
