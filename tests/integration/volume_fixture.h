// Shared pieces of the tests that format volumes in the member format with
// `dst-aggregator create` and look at them with `inspect` (the metadata and
// checksum integration suites, the fault_crash suite): members served by our
// plugin on sparse temp files, and the dst-aggregator command line run with a
// sanitizer check on its stderr.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

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
// complained on its stderr.
CommandResult RunAggregator(const std::vector<std::string>& args);

// `dst-aggregator create OPTIONS... URIS...`, which may fail.
CommandResult Create(const std::vector<std::string>& options, const std::vector<std::string>& uris);

// create with these options must succeed (exit code 0, else the case stops
// there, showing its output).
CommandResult CreateOk(const std::vector<std::string>& options,
                       const std::vector<std::string>& uris);

}  // namespace dst::test
