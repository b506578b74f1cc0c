#include "aggregator/stagelog/log_device.h"

#include <doctest/doctest.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

namespace dst::stagelog::log_device_test {
namespace {

TEST_CASE("log device: a file is created at its size and reads back what was written") {
  char dir[] = "/tmp/stagelog-test-XXXXXX";
  REQUIRE(mkdtemp(dir) != nullptr);
  const std::string path = std::string(dir) + "/log";
  std::unique_ptr<FileLogDevice> device;
  REQUIRE(FileLogDevice::Open(path, 1 << 20, &device).ok());
  CHECK(device->size() == (1u << 20));
  const std::vector<uint8_t> data(8192, 0x5a);
  REQUIRE(device->Write(4096, data).ok());
  REQUIRE(device->Sync().ok());
  device.reset();
  REQUIRE(FileLogDevice::Open(path, 0, &device).ok());
  CHECK(device->size() == (1u << 20));
  std::vector<uint8_t> back(8192);
  REQUIRE(device->Read(4096, back).ok());
  CHECK(back == data);
  const Status past = device->Read((1 << 20) - 100, back);
  CHECK(past.err() == EIO);
  CHECK(past.message().find("short") != std::string::npos);
  device.reset();
  unlink(path.c_str());
  rmdir(dir);
  const Status missing = FileLogDevice::Open(path, 0, &device);
  CHECK(missing.err() == ENOENT);
  CHECK(missing.message().find("open staging log " + path) == 0);
}

TEST_CASE("log device: a crash keeps synced writes and loses, keeps or tears the rest") {
  FakeLogDevice device(4096);
  const std::vector<uint8_t> ones(4096, 1), twos(4096, 2);
  REQUIRE(device.Write(0, ones).ok());
  REQUIRE(device.Sync().ok());
  REQUIRE(device.Write(0, twos).ok());
  std::vector<uint8_t> back(4096);
  REQUIRE(device.Read(0, back).ok());
  CHECK(back == twos);  // reads see unsynced writes
  device.Crash(FakeLogDevice::CrashMode::kLoseUnsynced);
  REQUIRE(device.Read(0, back).ok());
  CHECK(back == ones);
  REQUIRE(device.Write(0, twos).ok());
  device.Crash(FakeLogDevice::CrashMode::kKeepUnsynced);
  REQUIRE(device.Read(0, back).ok());
  CHECK(back == twos);
  // Random: over a few crashes, some write is torn (sectors of both contents).
  std::mt19937_64 rng(42);
  bool torn = false;
  for (int i = 0; i < 20 && !torn; ++i) {
    REQUIRE(device.Write(0, i % 2 ? twos : ones).ok());
    device.Crash(FakeLogDevice::CrashMode::kRandom, &rng);
    REQUIRE(device.Read(0, back).ok());
    torn = std::count(back.begin(), back.end(), 1) != 0 &&
           std::count(back.begin(), back.end(), 2) != 0;
  }
  CHECK(torn);
}

TEST_CASE("log device: injected failures change nothing") {
  FakeLogDevice device(4096);
  device.FailNextWrite(ENOSPC);
  const Status st = device.Write(0, std::vector<uint8_t>(512, 7));
  CHECK(st.err() == ENOSPC);
  CHECK(device.unsynced_writes() == 0);
  device.FailNextSync();
  REQUIRE(device.Write(0, std::vector<uint8_t>(512, 7)).ok());
  CHECK(device.Sync().err() == EIO);
  CHECK(device.unsynced_writes() == 1);
  CHECK(device.Sync().ok());
  CHECK(device.Write(4000, std::vector<uint8_t>(512)).err() == EIO);  // past the end
}

}  // namespace
}  // namespace dst::stagelog::log_device_test
