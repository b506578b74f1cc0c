// fio's nbd engine against nbdkit-dst-plugin: queued random reads and writes
// at depth 16, then a crc32c verification pass over everything written.
#include "tests/integration/plugin_fixture.h"

namespace dst::test {
namespace {

TEST_SUITE_BEGIN("plugin_fio");

using namespace std::chrono_literals;

TEST_CASE("fio randrw with crc32c verify") {
  TempDir dir;
  PluginServer server({"file=" + dir.File("fio.img"), "size=32M"});
  const Argv argv = {kFio,
                     "--name=dst",
                     "--ioengine=nbd",
                     "--uri=" + server.uri(),
                     "--rw=randrw",
                     "--bs=4k",
                     "--iodepth=16",
                     "--size=32M",
                     "--verify=crc32c",
                     "--do_verify=1",
                     "--verify_fatal=1",
                     "--verify_state_save=0",
                     "--runtime=20",
                     "--output-format=normal"};
  CheckFioVerified(argv, 60s);
}

TEST_SUITE_END();

}  // namespace
}  // namespace dst::test
