// FakeSysBlock: a directory shaped like /sys/block with the files the NBD driver shows
// (mapped_devices.h), for tests.
#pragma once

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>

#include "tests/harness/temp_dir.h"

namespace dst::aggregator::map {

class FakeSysBlock {
 public:
  std::string root() const { return dir_.path(); }
  // A device `name` ("nbd0"); connected when `pid` is set, with `backend` unless empty.
  void Device(const std::string& name, std::optional<long> pid, const std::string& backend,
              uint64_t sectors, int queues) {
    const std::filesystem::path d = std::filesystem::path(dir_.path()) / name;
    std::filesystem::create_directories(d / "mq");
    Write(d / "size", std::to_string(sectors) + "\n");
    if (pid) Write(d / "pid", std::to_string(*pid) + "\n");
    if (!backend.empty()) Write(d / "backend", backend + "\n");
    for (int q = 0; q < queues; ++q)
      std::filesystem::create_directories(d / "mq" / std::to_string(q));
  }

 private:
  static void Write(const std::filesystem::path& path, const std::string& text) {
    std::ofstream(path) << text;
  }
  test::TempDir dir_{"dst-sysblock"};
};

}  // namespace dst::aggregator::map
