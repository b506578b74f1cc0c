// ExportRegistry as `volume remove` uses it: a withdrawn volume is no longer found (by name or as
// the default) nor served, but listed until removed; a removed one's traffic counters stay valid
// for the connections still holding them.
#include "aggregator/server/export_registry.h"

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

namespace dst::server::export_registry_test {
namespace {

class NamedDevice : public volume::BlockDevice {
 public:
  explicit NamedDevice(std::string name) : name_(std::move(name)) {}
  const std::string& name() const override { return name_; }
  const std::string& description() const override { return description_; }
  uint64_t size() const override { return 1 << 20; }
  const volume::VolumeCapabilities& capabilities() const override { return caps_; }
  void Read(uint64_t, uint64_t, uint8_t*, ReadDone done) override { done(0, {}); }
  void Write(uint64_t, uint64_t, const uint8_t*, bool, Done done) override { done(0); }
  void Flush(Done done) override { done(0); }
  void Trim(uint64_t, uint64_t, bool, Done done) override { done(0); }
  void Zero(uint64_t, uint64_t, bool, bool, bool, Done done) override { done(0); }
  void Cache(uint64_t, uint64_t, Done done) override { done(0); }
  void BlockStatus(uint64_t, uint64_t, ExtentsDone done) override { done(0, {}); }
  // Snapshots of points "1" and "2" only.
  Status OpenSnapshot(std::string_view point, std::shared_ptr<BlockDevice>* out) override {
    if (point != "1" && point != "2") return Status::Invalid("no point " + std::string(point));
    *out = std::make_shared<NamedDevice>(name_ + "@" + std::string(point));
    return Status::Ok();
  }

 private:
  std::string name_;
  std::string description_;
  volume::VolumeCapabilities caps_;
};

TEST_CASE("a withdrawn volume is not found or served, and its traffic outlives its removal") {
  NamedDevice alpha("alpha"), beta("beta");
  ExportRegistry registry;
  registry.Add(&alpha);
  registry.Add(&beta);
  registry.SetDefault("alpha");
  VolumeTraffic& traffic = registry.TrafficOf(&alpha);
  traffic.clients = 1;
  CHECK(registry.Find("") == &alpha);
  CHECK(registry.Serves(&alpha));

  registry.Withdraw(&alpha);
  CHECK(registry.Withdrawn(&alpha));
  CHECK(registry.Find("alpha") == nullptr);
  CHECK(registry.Find("") == nullptr);  // the default is gone, not replaced
  CHECK(!registry.Serves(&alpha));
  CHECK(registry.volumes().size() == 2);  // still listed while it winds down
  CHECK(&registry.TrafficOf(&alpha) == &traffic);
  CHECK(registry.Find("beta") == &beta);

  registry.Remove(&alpha);
  CHECK(registry.volumes() == std::vector<volume::BlockDevice*>{&beta});
  CHECK(!registry.Withdrawn(&alpha));
  CHECK(!registry.Serves(&alpha));
  CHECK(traffic.clients == 1);  // still there for the connections that hold it
  --traffic.clients;
  CHECK(registry.TrafficOf(&beta).clients == 0);
  CHECK(registry.Serves(&beta));
}

TEST_CASE("VOLUME@POINT finds the volume's snapshot; unknown volumes and points are refused") {
  NamedDevice alpha("alpha");
  ExportRegistry registry;
  registry.Add(&alpha);
  volume::BlockDevice* volume = nullptr;
  std::shared_ptr<volume::BlockDevice> snapshot;
  REQUIRE(registry.FindSnapshot("alpha@2", &volume, &snapshot).ok());
  CHECK(volume == &alpha);
  CHECK(snapshot->name() == "alpha@2");
  CHECK(registry.FindSnapshot("alpha@3", &volume, &snapshot).message() == "no point 3");
  CHECK(registry.FindSnapshot("beta@1", &volume, &snapshot).message() == "unknown export 'beta@1'");
  CHECK(registry.FindSnapshot("alpha", &volume, &snapshot).err() == ENOENT);
  CHECK(registry.FindSnapshot("@1", &volume, &snapshot).err() == ENOENT);
  registry.Withdraw(&alpha);
  CHECK(registry.FindSnapshot("alpha@1", &volume, &snapshot).err() == ENOENT);
}

// What status reads while every loop counts its own connections' requests: sums that are
// never torn and end exact (under ThreadSanitizer, no race between the loops and the reader).
TEST_CASE("each loop counts its own requests; the counts are their sums") {
  constexpr size_t kLoops = 4;
  constexpr uint64_t kRequests = 20000;
  NamedDevice alpha("alpha");
  ExportRegistry registry(kLoops);
  registry.Add(&alpha);
  VolumeTraffic& traffic = registry.TrafficOf(&alpha);
  CHECK_THROWS_AS(traffic.OnLoop(kLoops), std::out_of_range);
  std::atomic<size_t> running{kLoops};
  std::vector<std::thread> loops;
  for (size_t loop = 0; loop < kLoops; ++loop)
    loops.emplace_back([&traffic, &running, loop] {
      LoopTraffic& t = traffic.OnLoop(loop);
      for (uint64_t i = 0; i < kRequests; ++i) {
        ++t.in_flight;
        ++t.requests;
        ++t.reads;
        t.read_bytes += 4096;
        t.RecordLatency(std::chrono::microseconds(loop + 1));
        --t.in_flight;
      }
      --running;
    });
  uint64_t last = 0;
  while (running > 0) {  // bounded by the writers, which never wait
    const TrafficCounts seen = traffic.Counts();
    CHECK(seen.requests >= last);
    CHECK(seen.in_flight <= kLoops);
    CHECK(seen.read_bytes <= 4096 * kLoops * kRequests);
    last = seen.requests;
  }
  for (std::thread& t : loops)
    t.join();
  const TrafficCounts counts = traffic.Counts();
  CHECK(counts.requests == kLoops * kRequests);
  CHECK(counts.reads == kLoops * kRequests);
  CHECK(counts.read_bytes == 4096 * kLoops * kRequests);
  CHECK(counts.in_flight == 0);
  CHECK(counts.latency_total_us == kRequests * (1 + 2 + 3 + 4));
  CHECK(counts.latency_max_us == kLoops);
  CHECK(counts.latency_avg_us() == 2);
}

}  // namespace
}  // namespace dst::server::export_registry_test
