// PlanReload (config_reload.h) on pairs of configuration files: what is added, removed and
// changed, and each refusal with its message.
#include "aggregator/config_reload.h"

#include <doctest/doctest.h>

#include "aggregator/serve_config_file.h"

namespace dst::aggregator::config_reload_test {
namespace {

const std::string kBase = R"(
listen = ["127.0.0.1:10900"]
resync-rate-min = "1M"
[[volume]]
name = "alpha"
members = ["nbd://h/a1", "nbd://h/a2"]
[[volume]]
name = "beta"
raw = true
members = ["nbd://h/b1"]
)";

LoadedConfig Load(const std::string& text) {
  LoadedConfig loaded{.text = text, .config = {}};
  REQUIRE(ParseServeConfig(text, "test.toml", &loaded.config).ok());
  REQUIRE(ValidateServeConfig(loaded.config).ok());
  return loaded;
}

// What kBase serves.
ServedVolumes Served() {
  return {
      .names = {"alpha", "beta"},
      .member_volume = {{"nbd://h/a1", "alpha"}, {"nbd://h/a2", "alpha"}, {"nbd://h/b1", "beta"}}};
}

Status Plan(const std::string& next, ReloadPlan* plan) {
  return PlanReload(Load(kBase), Load(next), Served(), plan);
}

std::string Replace(std::string text, const std::string& from, const std::string& to) {
  const size_t at = text.find(from);
  REQUIRE(at != std::string::npos);
  return text.replace(at, from.size(), to);
}

TEST_CASE("the same file changes nothing") {
  ReloadPlan plan;
  REQUIRE(Plan(kBase, &plan).ok());
  CHECK(plan.add.empty());
  CHECK(plan.remove.empty());
  CHECK(plan.live_keys.empty());
  CHECK_FALSE(plan.rates_changed);
  CHECK(plan.kept == std::vector<std::string>{"alpha", "beta"});
}

TEST_CASE("a volume added, one removed and a rate changed") {
  const std::string next = R"(
listen = ["127.0.0.1:10900"]
resync-rate-min = "2M"
request-timeout = "5s"
[[volume]]
members = ["nbd://h/a2", "nbd://h/a1"]
name = "alpha"
[[volume]]
name = "gamma"
raw = true
members = ["nbd://h/b1"]
)";
  ReloadPlan plan;
  REQUIRE(Plan(next, &plan).ok());
  REQUIRE(plan.add.size() == 1);
  CHECK(plan.add[0].name == "gamma");
  CHECK(plan.add[0].members == std::vector<std::string>{"nbd://h/b1"});
  CHECK(plan.remove == std::vector<std::string>{"beta"});
  CHECK(plan.kept == std::vector<std::string>{"alpha"});
  CHECK(plan.rates_changed);
  CHECK(plan.live_keys == std::vector<std::string>{"request-timeout", "resync-rate-min"});
}

TEST_CASE("a change that needs a restart is refused, naming the key") {
  ReloadPlan plan;
  CHECK(Plan(Replace(kBase, "10900", "10901"), &plan).message() ==
        "listen changed: needs a restart");
  CHECK(Plan("control = \"none\"\n" + kBase, &plan).message() ==
        "control changed: needs a restart");
  CHECK(Plan("workers = 0\n" + kBase, &plan).message() == "workers changed: needs a restart");
  CHECK(Plan(Replace(kBase, "\"nbd://h/a2\"", "\"nbd://h/a3\""), &plan).message() ==
        "volume alpha: members changed: needs a restart");
  CHECK(Plan(Replace(kBase, "raw = true", "raw = true\nlayout = \"stripe\""), &plan).message() ==
        "volume beta: layout changed: needs a restart");
}

TEST_CASE("a raw volume's members keep their order") {
  const std::string base = Replace(kBase, "[\"nbd://h/b1\"]", "[\"nbd://h/b1\", \"nbd://h/b2\"]");
  ServedVolumes served = Served();
  served.member_volume["nbd://h/b2"] = "beta";
  ReloadPlan plan;
  CHECK(PlanReload(
            Load(base),
            Load(Replace(base, "\"nbd://h/b1\", \"nbd://h/b2\"", "\"nbd://h/b2\", \"nbd://h/b1\"")),
            served, &plan)
            .message() == "volume beta: members changed: needs a restart");
}

TEST_CASE("a new volume may take only the members of a volume that leaves") {
  ReloadPlan plan;
  const std::string taken =
      kBase + "[[volume]]\nname = \"gamma\"\nraw = true\nmembers = [\"nbd://h/b1\"]\n";
  CHECK(Plan(taken, &plan).message() ==
        "volume gamma: nbd://h/b1 is a member of volume beta, which stays");
}

TEST_CASE("an unnamed volume is known by its members") {
  const std::string unnamed = Replace(kBase, "name = \"alpha\"\n", "");
  ReloadPlan plan;
  REQUIRE(PlanReload(Load(unnamed), Load(unnamed), Served(), &plan).ok());
  CHECK(plan.kept == std::vector<std::string>{"alpha", "beta"});
  const std::string fresh = Replace(unnamed, "nbd://h/a1\", \"nbd://h/a2", "nbd://h/c1");
  CHECK(PlanReload(Load(unnamed), Load(fresh), Served(), &plan).message() ==
        "the volume with members nbd://h/c1 has no name and is not served: give it a name to "
        "add it while serving");
}

TEST_CASE("a volume served but not in the last file is compared with nothing") {
  // alpha was added with `volume add`: the file's table is taken as it is.
  ServedVolumes served = Served();
  const std::string without_alpha = R"(
listen = ["127.0.0.1:10900"]
resync-rate-min = "1M"
[[volume]]
name = "beta"
raw = true
members = ["nbd://h/b1"]
)";
  ReloadPlan plan;
  REQUIRE(PlanReload(Load(without_alpha), Load(kBase), served, &plan).ok());
  CHECK(plan.add.empty());
  CHECK(plan.kept == std::vector<std::string>{"alpha", "beta"});
}

}  // namespace
}  // namespace dst::aggregator::config_reload_test
