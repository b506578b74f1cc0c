// RawVolumeFixture: the client-facing suites' common ground (security, slots,
// memory): one plugin member, a 64 MiB sparse file, served raw as vol0 by a
// dst-aggregator started with the case's options. On teardown the aggregator
// must still be running, stop with exit code 0 and leave no sanitizer report.
// With CheckReadWrite and LogShows, which those suites use to show that a
// client was served and that the server said what it did.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "tests/harness/aggregator_process.h"
#include "tests/integration/plugin_fixture.h"

namespace dst::test {

class RawVolumeFixture {
 public:
  static constexpr uint64_t kVolumeSize = 64 * kMiB;

  // `dir_name`: the prefix of the case's temporary directory.
  explicit RawVolumeFixture(const std::string& dir_name);
  ~RawVolumeFixture();
  RawVolumeFixture(const RawVolumeFixture&) = delete;
  RawVolumeFixture& operator=(const RawVolumeFixture&) = delete;

  // serve --raw ARGS... MEMBER, listening as `listen` says.
  AggregatorOptions Options(std::vector<std::string> args,
                            AggregatorListen listen = AggregatorListen::kTcp4) const;
  AggregatorServer& Start(AggregatorOptions options);
  AggregatorServer& Start(std::vector<std::string> args,
                          AggregatorListen listen = AggregatorListen::kTcp4);
  // A start that must fail.
  StartFailure StartFailing(std::vector<std::string> args) const;

  AggregatorServer& aggregator() { return *aggregator_; }
  const AggregatorServer& aggregator() const { return *aggregator_; }
  PluginServer& member() { return member_; }
  const TempDir& dir() const { return dir_; }

 private:
  TempDir dir_;
  PluginServer member_;
  std::unique_ptr<AggregatorServer> aggregator_;
};

// Writes `length` bytes of a pattern at `offset` and reads them back.
void CheckReadWrite(NbdClient& client, uint64_t offset, uint64_t seed, uint64_t length = 64 * kKiB);

// Polls the aggregator's stderr for `needle`, for up to `timeout`.
bool LogShows(AggregatorServer& aggregator, std::string_view needle,
              std::chrono::milliseconds timeout = std::chrono::seconds(10));

}  // namespace dst::test
