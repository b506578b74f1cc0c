// Reload end to end: the real `serve --config` over plugin members on files, the config file
// rewritten, and the real `reload` command or SIGHUP. What a user checks: a reload adds the
// volume the file gained, removes the one it lost and gives the volumes that stay the new
// background rates (status shows them); a volume that cannot be added is reported while the
// rest stays applied, and the next reload adds it; a change that needs a restart, an invalid file
// and the removal of a volume with a client connected are refused with the reason, on the command
// line and in the log, with nothing changed; SIGHUP does what `reload` does; without --config there
// is nothing to reload.
#include <chrono>
#include <csignal>
#include <regex>
#include <string>
#include <thread>

#include "tests/harness/aggregator_process.h"
#include "tests/harness/nbd_client.h"
#include "tests/integration/plugin_fixture.h"
#include "tests/integration/volume_fixture.h"

namespace dst::test::aggregator_reload_test {
namespace {

std::string Quoted(const std::string& s) {
  return "\"" + s + "\"";
}

// Members 0 ("alpha", raw), 1 ("safe", checksummed linear, formatted) and 2 ("gamma", raw, not
// served at first); the config file serves alpha and safe.
struct ReloadVolumes {
  FileMembers m;
  std::string config;

  ReloadVolumes() : m(3, 8 * kMiB) {
    CreateOk({"--name", "safe"}, {m.uri(1)});
    config = WriteConfig(m.dir(), File("", {"alpha", "safe"}));
  }

  // The file with `top` first and the volumes named (of alpha, safe, gamma).
  std::string File(const std::string& top, const std::vector<std::string>& volumes) const {
    std::string text = top;
    for (const std::string& name : volumes) {
      if (name == "alpha") text += Raw("alpha", m.uri(0));
      if (name == "gamma") text += Raw("gamma", m.uri(2));
      if (name == "safe")
        text += "[[volume]]\nname = \"safe\"\nmembers = [" + Quoted(m.uri(1)) + "]\n";
    }
    return text;
  }
  void Rewrite(const std::string& text) const { WriteConfig(m.dir(), text); }

  static std::string Raw(const std::string& name, const std::string& uri) {
    return "[[volume]]\nname = \"" + name + "\"\nraw = true\nmembers = [" + Quoted(uri) + "]\n";
  }
};

CommandResult Reload(const AggregatorServer& a) {
  return RunAggregator({"reload", "--control", a.control_path()});
}

std::string List(const AggregatorServer& a) {
  const CommandResult r = RunAggregator({"volume", "--control", a.control_path(), "list"});
  REQUIRE(r.exit_code == 0);
  return r.stdout_text;
}

std::string Status(const AggregatorServer& a) {
  const CommandResult r = RunAggregator({"status", "--control", a.control_path()});
  REQUIRE(r.exit_code == 0);
  return r.stdout_text;
}

void CheckOk(const CommandResult& r, const std::string& answer) {
  INFO("stdout:\n" << r.stdout_text << "stderr:\n" << r.stderr_text);
  CHECK(r.exit_code == 0);
  CHECK(r.stdout_text == answer + "\n");
}

// `reload` refused with `error`, logged as "reload refused: ERROR".
void CheckRefused(const AggregatorServer& a, const CommandResult& r, const std::string& error) {
  INFO("stdout:\n" << r.stdout_text << "stderr:\n" << r.stderr_text);
  CHECK(r.exit_code == 1);
  CHECK(r.stdout_text.empty());
  CHECK(Contains(LineWithAll(r.stderr_text, {"error: "}), "error: " + error));
  CHECK(Contains(a.stderr_text(), "reload refused: " + error));
}

const char kBoth[] =
    "alpha: linear, 8 MiB, 0 clients, serving\nsafe: linear, [0-9.]+ [KM]iB, 0 clients, serving\n";

TEST_SUITE_BEGIN("aggregator_reload");

TEST_CASE("reload: a volume added, one removed, and the new rates") {
  ReloadVolumes v;
  Served agg({"--config", v.config});
  CHECK(Contains(Status(agg), "rate 1 MiB/s to 200 MiB/s"));
  CheckOk(Reload(agg), "ok: reloaded: 0 added, 0 removed, 0 changed");

  v.Rewrite(v.File("resync-rate-min = \"2M\"\nresync-rate-max = \"100M\"\n", {"safe", "gamma"}));
  CheckOk(Reload(agg), "ok: reloaded: 1 added, 1 removed, 1 changed");
  CHECK(agg.WaitForLog("reloaded: 1 added, 1 removed, 1 changed"));
  CHECK(Contains(agg.stderr_text(), "volume alpha: removed"));
  CHECK(Contains(agg.stderr_text(), "volume gamma: added (linear, 8 MiB)"));
  CHECK(std::regex_match(List(agg), std::regex("safe: linear, [0-9.]+ [KM]iB, 0 clients, serving\n"
                                               "gamma: linear, 8 MiB, 0 clients, serving\n")));
  CHECK(Contains(Status(agg), "rate 2 MiB/s to 100 MiB/s"));
  // The new volume serves.
  NbdClient c;
  REQUIRE_NBD_OK(c.Connect(agg.uri("gamma")));
  const Bytes data = RandomBytes(64 * kKiB, 7);
  Bytes back(data.size());
  REQUIRE_NBD_OK(c.Pwrite(data, 0));
  REQUIRE_NBD_OK(c.Pread(back, 0));
  CHECK(back == data);
  CHECK_NBD_OK(c.Shutdown());
}

TEST_CASE("reload: refused for a restart, an invalid file or a client, with nothing changed") {
  ReloadVolumes v;
  Served agg({"--config", v.config});
  // Together with an added volume and a new rate: none of them is applied.
  v.Rewrite(v.File("resync-rate-min = \"2M\"\nmax-connections = 10\n", {"alpha", "safe", "gamma"}));
  CheckRefused(agg, Reload(agg), "max-connections changed: needs a restart");
  v.Rewrite(v.File("", {"alpha", "gamma"}) + "[[volume]]\nname = \"safe\"\nmembers = [" +
            Quoted(v.m.uri(1)) + ", " + Quoted(v.m.uri(2)) + "]\n");
  CheckRefused(agg, Reload(agg), "volume safe: members changed: needs a restart");
  v.Rewrite(v.File("frobnicate = 1\n", {"alpha", "safe"}));
  CheckRefused(agg, Reload(agg), v.config + ":1: unknown key 'frobnicate'");
  v.Rewrite(v.File("", {"alpha"}) + "[[volume]]\nname = \"safe\"\n");
  CheckRefused(agg, Reload(agg), "volume safe: no members");
  CHECK(std::regex_match(List(agg), std::regex(kBoth)));
  CHECK(Contains(Status(agg), "rate 1 MiB/s to 200 MiB/s"));

  {
    NbdClient c;
    REQUIRE_NBD_OK(c.Connect(agg.uri("alpha")));
    v.Rewrite(v.File("", {"safe", "gamma"}));
    // The client is counted a moment after it is connected.
    std::string error;
    for (int i = 0; i < 50; ++i) {
      const CommandResult r = Reload(agg);
      REQUIRE(r.exit_code == 1);
      error = r.stderr_text;
      if (Contains(error, "client(s) connected")) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    CHECK(Contains(error,
                   "error: volume alpha has 1 client(s) connected: a reload does not end them "
                   "(disconnect them, or volume remove alpha --force)"));
    CHECK_NBD_OK(c.Shutdown());
  }
  CHECK(std::regex_search(List(agg), std::regex("^alpha: linear, 8 MiB, [01] clients?, serving\n"
                                                "safe: ")));
}

TEST_CASE("reload: a volume that cannot be added is reported, the rest stays applied") {
  ReloadVolumes v;
  Served agg({"--config", v.config});
  const std::string gone = "nbd+unix:///disk?socket=" + v.m.dir().File("gone.sock");
  v.Rewrite(v.File("", {"safe"}) + ReloadVolumes::Raw("gamma", gone));
  const std::string error =
      "reload applied in part (0 added, 1 removed, 0 changed): volume gamma "
      "not added: member " +
      gone + ": connect: No such file or directory";
  const CommandResult r = Reload(agg);
  INFO("stderr:\n" << r.stderr_text);
  CHECK(r.exit_code == 1);
  CHECK(Contains(r.stderr_text, "error: " + error));
  CHECK(
      agg.WaitForLog("reload applied in part: 0 added, 1 removed, 0 changed; volume gamma not "
                     "added: member "));
  CHECK(std::regex_match(List(agg),
                         std::regex("safe: linear, [0-9.]+ [KM]iB, 0 clients, serving\n")));
  // The next reload adds what is still missing.
  v.Rewrite(v.File("", {"safe", "gamma"}));
  CheckOk(Reload(agg), "ok: reloaded: 1 added, 0 removed, 0 changed");
  CHECK(Contains(List(agg), "gamma: linear, 8 MiB, 0 clients, serving\n"));
}

TEST_CASE("reload: SIGHUP does what reload does") {
  ReloadVolumes v;
  Served agg({"--config", v.config});
  v.Rewrite(v.File("max-connections = 10\n", {"alpha", "safe"}));
  agg.Kill(SIGHUP);
  CHECK(agg.WaitForLog("reload refused: max-connections changed: needs a restart"));
  CHECK(std::regex_match(List(agg), std::regex(kBoth)));

  v.Rewrite(v.File("", {"alpha", "safe", "gamma"}));
  agg.Kill(SIGHUP);
  CHECK(agg.WaitForLog("reloaded: 1 added, 0 removed, 0 changed"));
  CHECK(Contains(List(agg), "gamma: linear, 8 MiB, 0 clients, serving\n"));
}

TEST_CASE("reload: nothing to reload without --config") {
  FileMembers m(1, 8 * kMiB);
  Served agg({"--raw", m.uri(0)});
  const CommandResult r = Reload(agg);
  CHECK(r.exit_code == 1);
  CHECK(Contains(r.stderr_text, "error: serve was started without --config: nothing to reload"));
  agg.Kill(SIGHUP);
  CHECK(agg.WaitForLog("reload refused: serve was started without --config: nothing to reload", 2));
}

TEST_SUITE_END();

}  // namespace
}  // namespace dst::test::aggregator_reload_test
