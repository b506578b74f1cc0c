// Shared pieces of the plugin's integration tests: where the plugin and the
// tools are, a PluginServer (nbdkit + nbdkit-dst-plugin.so) that on teardown
// checks that nbdkit exited cleanly with no sanitizer report, and doctest
// assertions for NbdStatus results.
#pragma once

#include <doctest/doctest.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

#include "tests/harness/nbd_client.h"
#include "tests/harness/nbdkit_server.h"
#include "tests/harness/process.h"
#include "tests/harness/temp_dir.h"
#include "tests/harness/test_data.h"

namespace dst::test {

inline constexpr uint64_t kKiB = 1024;
inline constexpr uint64_t kMiB = 1024 * kKiB;

// Tool paths from the build (tests/CMakeLists.txt).
inline constexpr const char* kNbdinfo = DST_TOOL_NBDINFO;
inline constexpr const char* kNbdcopy = DST_TOOL_NBDCOPY;
inline constexpr const char* kQemuImg = DST_TOOL_QEMU_IMG;
inline constexpr const char* kQemuIo = DST_TOOL_QEMU_IO;
inline constexpr const char* kFio = DST_TOOL_FIO;
inline constexpr const char* kPython3 = DST_PYTHON3;

NbdkitOptions PluginOptions(std::vector<std::string> args, Transport transport = Transport::kUnix);

// nbdkit serving nbdkit-dst-plugin.so with the given plugin arguments.
class PluginServer : public NbdkitServer {
 public:
  // nbdkit_flags go before the plugin, e.g. "-v".
  explicit PluginServer(std::vector<std::string> args, Transport transport = Transport::kUnix,
                        std::vector<std::string> nbdkit_flags = {});
  // Stops nbdkit and checks it exited with 0 and without sanitizer reports.
  ~PluginServer();
};

// nbdkit with a configuration the plugin must reject.
StartFailure ExpectStartFailure(std::vector<std::string> args);

// Writes a TOML config into dir and returns its path.
std::string WriteConfig(const TempDir& dir, std::string_view toml,
                        std::string_view name = "dst.toml");

// The first line of text containing every needle, or "" if none does.
std::string LineWithAll(const std::string& text, std::initializer_list<std::string_view> needles);

bool Contains(std::string_view text, std::string_view needle);
// How many times needle occurs in text, not overlapping.
size_t CountOf(std::string_view text, std::string_view needle);
// The number after the first `"KEY": ` in `json` (JSON as dst-aggregator prints it), or -1.
int64_t JsonNumber(const std::string& json, const std::string& key);

// Runs a tool and requires exit code 0, showing its output otherwise.
CommandResult RunOk(const Argv& argv, std::chrono::milliseconds timeout = std::chrono::seconds(30));

// A refused dst-aggregator command: exit 1 and exactly one line on stderr,
// the error, naming every needle.
void CheckRefused(const CommandResult& r, std::initializer_list<std::string_view> needles);

// Runs a fio job with verify= and checks that it wrote, read back and
// verified everything: exit 0, no verify failure, no I/O error.
void CheckFioVerified(const Argv& argv, std::chrono::milliseconds timeout);

// "EPERM", or "success" for 0 (strerrorname_np returns null for 0).
inline const char* ErrnoName(int err) {
  const char* name = err == 0 ? "success" : ::strerrorname_np(err);
  return name ? name : "unknown errno";
}

// ---------------------------------------------------------------------------
// fio's JSON report (--output-format=json), read with python3's json module.

struct FioDirection {
  uint64_t io_kib = 0;
  uint64_t ios = 0;
  uint64_t clat_max_ns = 0;  // completion latency, the longest one
};
struct FioReport {
  int error = -1;  // the job's error (EILSEQ for a verify failure)
  FioDirection read, write;
};
// Parses the report of fio's only job from fio's stdout (lines before the
// JSON, like "fio: connected to NBD server", are skipped). Throws if it is
// not there.
FioReport ParseFioJson(const std::string& fio_stdout);

}  // namespace dst::test

// Assertions on NbdStatus that print errno name and libnbd's message.
#define DST_NBD_ASSERT(level, expr, want)                                                        \
  do {                                                                                           \
    const ::dst::test::NbdStatus dst_status_ = (expr);                                           \
    level##_MESSAGE(dst_status_.err == (want),                                                   \
                    #expr " gave " << dst_status_ << ", want " << ::dst::test::ErrnoName(want)); \
  } while (0)
#define CHECK_NBD_OK(expr) DST_NBD_ASSERT(CHECK, expr, 0)
#define REQUIRE_NBD_OK(expr) DST_NBD_ASSERT(REQUIRE, expr, 0)
#define CHECK_NBD_ERR(expr, err) DST_NBD_ASSERT(CHECK, expr, err)
#define CHECK_NBD_FAILS(expr)                                                    \
  do {                                                                           \
    const ::dst::test::NbdStatus dst_status_ = (expr);                           \
    CHECK_MESSAGE(!dst_status_.ok(), #expr " succeeded but should have failed"); \
  } while (0)
