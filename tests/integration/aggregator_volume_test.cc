// Volume commands end to end: the real `serve` over plugin members on files, with a raw volume, a
// checksummed linear volume and a mirror from one config file, and the real `volume` command.
// What a user checks: `volume list` shows each volume's layout, size, clients and state, in lines
// and in JSON.
#include <chrono>
#include <regex>
#include <thread>

#include "tests/harness/aggregator_process.h"
#include "tests/harness/nbd_client.h"
#include "tests/integration/plugin_fixture.h"
#include "tests/integration/volume_fixture.h"

namespace dst::test {
namespace {

using namespace std::chrono_literals;

std::string Quoted(const std::string& s) {
  return "\"" + s + "\"";
}

// Members 0 (raw "alpha"), 1 ("safe", checksummed linear), 2 and 3 ("mir", a mirror), all
// formatted; the config file that serves the three.
struct ThreeVolumes {
  FileMembers m;
  std::string config;

  ThreeVolumes() : m(4, 8 * kMiB) {
    CreateOk({"--name", "safe"}, {m.uri(1)});
    CreateOk({"--name", "mir", "--layout", "mirror"}, {m.uri(2), m.uri(3)});
    config =
        WriteConfig(m.dir(), "[[volume]]\nname = \"alpha\"\nraw = true\nmembers = [" +
                                 Quoted(m.uri(0)) + "]\n[[volume]]\nname = \"safe\"\nmembers = [" +
                                 Quoted(m.uri(1)) + "]\n[[volume]]\nname = \"mir\"\nmembers = [" +
                                 Quoted(m.uri(2)) + ", " + Quoted(m.uri(3)) + "]\n");
  }
};

CommandResult Volume(const AggregatorServer& a, std::vector<std::string> args) {
  args.insert(args.begin(), {"volume", "--control", a.control_path()});
  return RunAggregator(args);
}

std::string ListOk(const AggregatorServer& a, bool json = false) {
  const CommandResult r = Volume(
      a, json ? std::vector<std::string>{"list", "--json"} : std::vector<std::string>{"list"});
  INFO("stdout:\n" << r.stdout_text << "stderr:\n" << r.stderr_text);
  REQUIRE(r.exit_code == 0);
  CHECK(r.stderr_text.empty());
  return r.stdout_text;
}

// The list once `pattern` matches it (polled, 10 s at most): a client's arrival or departure is
// counted a moment after the client sees it.
std::string AwaitList(const AggregatorServer& a, const std::string& pattern) {
  const std::regex re(pattern);
  std::string text;
  for (int i = 0; i < 100; ++i) {
    text = ListOk(a);
    if (std::regex_search(text, re)) return text;
    std::this_thread::sleep_for(100ms);
  }
  FAIL("volume list never matched " << pattern << ":\n" << text);
  return text;
}

TEST_SUITE_BEGIN("aggregator_volume");

TEST_CASE("volume list: every volume's layout, size, clients and state, in lines and JSON") {
  ThreeVolumes v;
  Served agg({"--config", v.config});
  const std::string idle = ListOk(agg);
  INFO("volume list:\n" << idle);
  CHECK(std::regex_match(idle, std::regex("alpha: linear, 8 MiB, 0 clients, serving\n"
                                          "safe: linear, [0-9.]+ [KM]iB, 0 clients, serving\n"
                                          "mir: mirror, [0-9.]+ [KM]iB, 0 clients, serving\n")));

  NbdClient c;
  REQUIRE_NBD_OK(c.Connect(agg.uri("alpha")));
  AwaitList(agg, "alpha: linear, 8 MiB, 1 client, serving\n");
  CHECK(Contains(ListOk(agg, true), "{\"name\": \"alpha\", \"layout\": \"linear\", \"size\": " +
                                        std::to_string(8 * kMiB) +
                                        ", \"clients\": 1, \"state\": \"serving\"}"));
  CHECK_NBD_OK(c.Shutdown());
  AwaitList(agg, "alpha: linear, 8 MiB, 0 clients, serving\n");

  const CommandResult failed =
      RunAggregator({"member", "--control", agg.control_path(), "fail", "mir", "1"});
  CHECK(failed.stdout_text == "ok: mir slot 1 failed\n");
  CHECK(Contains(ListOk(agg), "mir: mirror, "));
  CHECK(std::regex_search(ListOk(agg), std::regex("mir: mirror, [^\n]*, 0 clients, degraded\n")));
  const std::string json = ListOk(agg, true);
  CHECK(json.rfind("{\"volumes\": [\n  {\"name\": \"alpha\"", 0) == 0);
  CHECK(Contains(json, "\"name\": \"mir\", \"layout\": \"mirror\""));
  CHECK(Contains(json, "\"state\": \"degraded\"}\n]}\n"));
}

TEST_CASE("volume list refuses what it does not know") {
  ThreeVolumes v;
  Served agg({"--config", v.config});
  const CommandResult r = Volume(agg, {"frob"});
  CHECK(r.exit_code != 0);
  CHECK(Contains(r.stderr_text, "frob"));
}

TEST_SUITE_END();

}  // namespace
}  // namespace dst::test
