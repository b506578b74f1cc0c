// Where the areas of the member format are (AreaOf, from `inspect --json`), and a 2-copy mirror
// on two export nodes backed by files, for the fault suites that take a copy away and bring it
// back (fault_mirror_resync, fault_mirror_return): the volume is made with `create --layout
// mirror --copies 2 --region-size 1M`, and the copies' data areas can be read from the files to
// compare them.
#pragma once

#include <map>
#include <memory>
#include <random>
#include <regex>
#include <string>
#include <vector>

#include "tests/fault/fault_fixture.h"
#include "tests/integration/volume_fixture.h"

namespace dst::test::fault {

struct Area {
  uint64_t offset = 0, size = 0;
};

// "NAME": {"offset": O, "size": S} in `inspect --json`.
inline Area AreaOf(const std::string& json, const std::string& name) {
  std::smatch m;
  const std::regex re("\"" + name + "\": *\\{\"offset\": *([0-9]+), *\"size\": *([0-9]+)\\}");
  REQUIRE_MESSAGE(std::regex_search(json, m, re), "no area " << name << " in:\n" << json);
  return {std::stoull(m[1]), std::stoull(m[2])};
}

// Two export nodes on files and the mirror `name` made of them (1 MiB regions).
class Mirror {
 public:
  explicit Mirror(uint64_t member_size, const std::string& name = "mir") : size_(member_size) {
    for (size_t i = 0; i < 2; ++i) {
      files_.push_back(dir_.File("m" + std::to_string(i) + ".img"));
      members_.push_back(std::make_unique<Member>(files_[i], size_));
    }
    CreateOk({"--name", name, "--layout", "mirror", "--copies", "2", "--region-size", "1M"},
             uris());
    const CommandResult inspect = RunAggregator({"inspect", "--json", members_[0]->uri()});
    REQUIRE(inspect.exit_code == 0);
    data_ = AreaOf(inspect.stdout_text, "data");
  }

  std::vector<std::string> uris() const { return {members_[0]->uri(), members_[1]->uri()}; }
  Member& member(size_t i) { return *members_[i]; }
  // Member 1 started again on its file, with `filters` in front (on a new socket: a new URI).
  void RestartMember1(std::vector<std::string> filters = {}, std::vector<std::string> args = {}) {
    members_[1].reset();
    members_[1] = std::make_unique<Member>(files_[1], size_, std::move(filters), std::move(args));
  }
  void StopMember1() {
    REQUIRE(members_[1]->Stop() == 0);
    members_[1].reset();
  }
  Bytes Data(size_t i) const { return ReadFileRange(files_[i], data_.offset, data_.size); }
  uint64_t data_size() const { return data_.size; }

 private:
  TempDir dir_{"dst-fault-mirror"};
  uint64_t size_;
  std::vector<std::string> files_;
  std::vector<std::unique_ptr<Member>> members_;
  Area data_;
};

// Volume offset -> the block last written there.
using Written = std::map<uint64_t, Bytes>;

// `count` 4 KiB blocks at seeded random offsets below `span` of `volume`, acknowledged, then a
// flush.
inline void WriteBlocks(AggregatorServer& agg, uint64_t span, int count, uint64_t seed,
                        Written* written, const std::string& volume = "mir") {
  constexpr uint64_t kBlock = 4 * kKiB;
  NbdClient client;
  REQUIRE_NBD_OK(client.Connect(agg.uri(volume)));
  std::mt19937_64 rng(seed);
  for (int i = 0; i < count; ++i) {
    const uint64_t offset = rng() % (span / kBlock) * kBlock;
    const Bytes data = RandomBytes(kBlock, seed * 1000 + i);
    REQUIRE_NBD_OK(WriteFor(client, data, offset));
    (*written)[offset] = data;
  }
  REQUIRE_NBD_OK(FlushFor(client));
  CHECK_NBD_OK(client.Shutdown());
}

// Every block in `written` reads back as written.
inline void CheckReadBack(AggregatorServer& agg, const Written& written,
                          const std::string& volume = "mir") {
  NbdClient client;
  REQUIRE_NBD_OK(client.Connect(agg.uri(volume)));
  size_t differ = 0;
  for (const auto& [offset, data] : written) {
    Bytes back(data.size());
    REQUIRE_NBD_OK(ReadFor(client, back, offset));
    if (back != data) ++differ;
  }
  CHECK(differ == 0);
  CHECK_NBD_OK(client.Shutdown());
}

// `dst-aggregator member ARGS` on the aggregator's control socket.
inline CommandResult AskMember(const AggregatorServer& agg, std::vector<std::string> args) {
  args.insert(args.begin(), {"member", "--control", agg.control_path()});
  return RunAggregator(args);
}

}  // namespace dst::test::fault
