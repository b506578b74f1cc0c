// `dst-aggregator map` against a running aggregator, as far as this machine allows without the
// kernel's nbd module (the kernel test maps for real, in a guest): the aggregator is found
// through its control socket (the `endpoints` request), the volume is asked for on its Unix
// socket or TCP listener, and each refusal is one error line, exit 1.
#include <filesystem>

#include "tests/harness/tls_credentials.h"
#include "tests/integration/plugin_fixture.h"
#include "tests/integration/volume_fixture.h"

namespace dst::test::aggregator_map_test {
namespace {

CommandResult Map(std::vector<std::string> args) {
  args.insert(args.begin(), "map");
  return RunAggregator(args);
}

TEST_SUITE_BEGIN("aggregator_map");

TEST_CASE("map: finds the aggregator through its control socket and asks for the volume") {
  FileMembers m(1, 8 * kMiB);
  Served a({"--raw", m.uri(0)});
  // The volume is asked for on the aggregator's Unix socket, which `endpoints` names first.
  CheckCommandRefused(Map({"--control", a.control_path(), "nope"}),
                      "unknown volume 'nope' (unix:" + a.socket_path() + " has no such export)");
  CheckCommandRefused(Map({"--socket", a.socket_path(), "nope"}),
                      "unknown volume 'nope' (unix:" + a.socket_path() + " has no such export)");
  // A known volume gets as far as the kernel.
  if (!std::filesystem::exists("/sys/module/nbd"))
    CheckCommandRefused(Map({"--control", a.control_path(), "vol0"}),
                        "the kernel's nbd module is not loaded (modprobe nbd)");
  else
    MESSAGE("the nbd module is loaded here: mapping a known volume is left to the kernel test");
  // status --json ends with the devices mapped on this machine: none here.
  const CommandResult status = RunAggregator({"status", "--json", "--control", a.control_path()});
  CHECK(status.exit_code == 0);
  CHECK(Contains(status.stdout_text, ",\n \"mapped\": []}"));
}

TEST_CASE("map: an aggregator that is not there, or that requires TLS, is one error line") {
  FileMembers m(1, 8 * kMiB);
  const TempDir dir("dst-map");
  CheckCommandRefused(Map({"--connect", "127.0.0.1:1", "vol0"}),
                      "aggregator at 127.0.0.1:1 unreachable: Connection refused");
  CheckCommandRefused(
      Map({"--socket", dir.File("none.sock"), "vol0"}),
      "aggregator at unix:" + dir.File("none.sock") + " unreachable: No such file or directory");
  CheckCommandRefused(Map({"--control", dir.File("none.sock"), "vol0"}),
                      "control socket " + dir.File("none.sock"));
  CheckCommandRefused(Map({"--connections", "1", "--block-size", "8192", "--socket", "x", "v"}),
                      "--block-size 8192: the kernel takes a power of two from 512 to 4096");

  const PskFile psk("alice");
  Served tls({"--raw", "--tls=require", "--tls-psk", psk.path(), m.uri(0)});
  CheckCommandRefused(Map({"--control", tls.control_path(), "vol0"}),
                      "the aggregator requires TLS (--tls=require), which the kernel's NBD "
                      "client cannot do: map needs a listener without TLS");
  // Named directly, the aggregator's own refusal (NBD_REP_ERR_TLS_REQD) says the same.
  CheckCommandRefused(
      Map({"--socket", tls.socket_path(), "vol0"}),
      "unix:" + tls.socket_path() + " requires TLS, which the kernel's NBD client cannot do");
}

TEST_SUITE_END();

}  // namespace
}  // namespace dst::test::aggregator_map_test
