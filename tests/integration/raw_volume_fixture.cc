#include "tests/integration/raw_volume_fixture.h"

#include <doctest/doctest.h>

#include <thread>

#include "tests/harness/test_data.h"

namespace dst::test {

RawVolumeFixture::RawVolumeFixture(const std::string& dir_name)
    : dir_(dir_name), member_({"file=" + dir_.File("member.img"), "size=64M"}) {}

RawVolumeFixture::~RawVolumeFixture() {
  if (!aggregator_) return;
  CHECK_MESSAGE(aggregator_->Running(), "dst-aggregator died:\n" << aggregator_->stderr_text());
  const int code = aggregator_->Stop();
  CHECK_MESSAGE(code == 0, "exit code " << code << "\n" << aggregator_->stderr_text());
  CHECK_MESSAGE(aggregator_->SanitizerReports().empty(), aggregator_->stderr_text());
}

AggregatorOptions RawVolumeFixture::Options(std::vector<std::string> args,
                                            AggregatorListen listen) const {
  AggregatorOptions o;
  o.binary = DST_AGGREGATOR_PATH;
  o.args = {"--raw"};
  o.args.insert(o.args.end(), args.begin(), args.end());
  o.args.push_back(member_.uri());
  o.listen = listen;
  return o;
}

AggregatorServer& RawVolumeFixture::Start(AggregatorOptions options) {
  aggregator_ = std::make_unique<AggregatorServer>(std::move(options));
  return *aggregator_;
}

AggregatorServer& RawVolumeFixture::Start(std::vector<std::string> args, AggregatorListen listen) {
  return Start(Options(std::move(args), listen));
}

StartFailure RawVolumeFixture::StartFailing(std::vector<std::string> args) const {
  return AggregatorServer::StartExpectingFailure(Options(std::move(args)));
}

void CheckReadWrite(NbdClient& client, uint64_t offset, uint64_t seed, uint64_t length) {
  const Bytes data = RandomBytes(length, seed);
  REQUIRE_NBD_OK(client.Pwrite(data, offset));
  Bytes back(data.size());
  REQUIRE_NBD_OK(client.Pread(back, offset));
  CHECK_MESSAGE(back == data, "read back different data at " << offset);
}

bool LogShows(AggregatorServer& aggregator, std::string_view needle,
              std::chrono::milliseconds timeout) {
  return aggregator.WaitForLog(needle, 1, timeout);
}

}  // namespace dst::test
