#include "nbdkit-plugin/plugin_config.h"

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include <doctest/doctest.h>

using dst::Status;
using dst::plugin::AccessMode;
using dst::plugin::Peer;
using dst::plugin::PluginConfig;

namespace {

// A config file in a temporary directory, removed afterwards.
class TempConfig {
 public:
  explicit TempConfig(const std::string& text) {
    char tmpl[] = "/tmp/dst-config-XXXXXX";
    const int fd = mkstemp(tmpl);
    REQUIRE(fd >= 0);
    close(fd);
    path_ = tmpl;
    std::ofstream(path_) << text;
  }
  ~TempConfig() { unlink(path_.c_str()); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

Status LoadText(const std::string& text, PluginConfig* config, std::string* path = nullptr) {
  TempConfig file(text);
  if (path) *path = file.path();
  DST_RETURN_IF_ERROR(config->Set("config", file.path()));
  return config->Complete();
}

}  // namespace

TEST_CASE("file= alone gives one default export") {
  PluginConfig config;
  REQUIRE(config.Set("file", "/tmp/x.img").ok());
  REQUIRE(config.Set("size", "64M").ok());
  REQUIRE(config.Set("readonly", "yes").ok());
  REQUIRE(config.Set("access", "unix ro").ok());
  REQUIRE(config.Complete().ok());
  REQUIRE(config.exports().size() == 1);
  const auto& spec = config.exports()[0];
  CHECK(spec.name == "default");
  CHECK(config.default_export() == "default");
  CHECK(spec.size == 64u << 20);
  CHECK(spec.readonly);
  CHECK(spec.access.Decide(Peer::Unix()) == AccessMode::kReadOnly);
}

TEST_CASE("bad parameters name the key and the value") {
  PluginConfig config;
  CHECK(config.Set("foo", "bar").message() == "unknown parameter 'foo' (in foo=bar)");
  CHECK(config.Set("size", "12X").message() == "size=12X: not a size (e.g. 4096, 64M, 10G)");
  CHECK(config.Set("readonly", "maybe").message() == "readonly=maybe: expected true or false");
  CHECK(config.Set("access", "10.0.0.0/33 rw").message() ==
        "access='10.0.0.0/33 rw': bad address range '10.0.0.0/33'");
  CHECK(PluginConfig().Complete().message() == "file=PATH or config=FILE is required");
}

TEST_CASE("config= cannot be combined with file=") {
  PluginConfig config;
  REQUIRE(config.Set("file", "/tmp/x").ok());
  REQUIRE(config.Set("config", "/tmp/y.toml").ok());
  CHECK(config.Complete().message().find("config= cannot be combined with file=") !=
        std::string::npos);
}

TEST_CASE("a config file with several exports") {
  PluginConfig config;
  const Status s = LoadText(R"(
default = "b"
[[export]]
name = "a"
file = "/tmp/a.img"
size = "1M"
description = "first"
access = ["127.0.0.0/8 rw", "unix ro"]

[[export]]
name = "b"
file = "/tmp/b.img"
size = 8192
readonly = true
direct = true
)",
                            &config);
  REQUIRE_MESSAGE(s.ok(), s.message());
  REQUIRE(config.exports().size() == 2);
  CHECK(config.default_export() == "b");
  CHECK(config.exports()[0].description == "first");
  CHECK(config.exports()[0].size == 1u << 20);
  CHECK(config.exports()[0].access.Decide(Peer::Unix()) == AccessMode::kReadOnly);
  CHECK(config.exports()[1].size == 8192u);
  CHECK(config.exports()[1].readonly);
  CHECK(config.exports()[1].direct);
  CHECK_MESSAGE(config.exports()[1].origin.find(":10") != std::string::npos,
                config.exports()[1].origin);
}

TEST_CASE("config errors carry file and line") {
  // Loads `text` and returns the error with the temporary path replaced by FILE.
  auto error_of = [](const std::string& text) {
    PluginConfig config;
    std::string path;
    std::string msg = LoadText(text, &config, &path).message();
    const auto at = msg.find(path);
    if (at != std::string::npos) msg.replace(at, path.size(), "FILE");
    return msg;
  };
  CHECK(error_of("[[export]]\nname='a'\nfile='/x'\n[[export]]\nname='a'\nfile='/y'\n") ==
        "config=FILE:4: duplicate export name 'a'");
  CHECK(error_of("[[export]]\nname='a'\nfile='/x'\ncolour='red'\n") ==
        "config=FILE:4: unknown key 'colour' in [[export]]");
  CHECK(error_of("[[export]]\nname = \n").find("config=FILE:2: ") == 0);
  CHECK(error_of("[[export]]\nname='a'\nfile='/x'\naccess=['1.2.3.4/40 rw']\n") ==
        "config=FILE:4: access: access='1.2.3.4/40 rw': bad address range '1.2.3.4/40'");
  CHECK(error_of("default='zz'\n[[export]]\nname='a'\nfile='/x'\n") ==
        "config=FILE: default export 'zz' is not defined");
  CHECK(error_of("") == "config=FILE: no [[export]] defined");
  CHECK(error_of("[[export]]\nfile='/x'\n") == "config=FILE:1: export without a name");
  CHECK(error_of("[[export]]\nname='a'\nreadonly='yes'\n") ==
        "config=FILE:3: readonly: expected true or false");
  PluginConfig missing;
  REQUIRE(missing.Set("config", "/nonexistent/dst.toml").ok());
  CHECK(missing.Complete().message() ==
        "config=/nonexistent/dst.toml: open: No such file or directory");
}

TEST_CASE("fence-wait= and debug-hold-write=") {
  using std::chrono::milliseconds;
  PluginConfig config;
  REQUIRE(config.Set("file", "/tmp/x.img").ok());
  CHECK(config.fence_wait() == std::chrono::seconds(30));
  CHECK_FALSE(config.debug_hold_write().has_value());
  SUBCASE("bare seconds") {
    REQUIRE(config.Set("fence-wait", "5").ok());
    CHECK(config.fence_wait() == std::chrono::seconds(5));
  }
  SUBCASE("milliseconds") {
    REQUIRE(config.Set("fence-wait", "500ms").ok());
    CHECK(config.fence_wait() == milliseconds(500));
  }
  SUBCASE("seconds with unit, and zero") {
    REQUIRE(config.Set("fence-wait", "0s").ok());
    CHECK(config.fence_wait() == milliseconds(0));
  }
  SUBCASE("debug-hold-write with a size offset and bare milliseconds") {
    REQUIRE(config.Set("debug-hold-write", "1M:1500").ok());
    REQUIRE(config.debug_hold_write().has_value());
    CHECK(config.debug_hold_write()->offset == 1u << 20);
    CHECK(config.debug_hold_write()->duration == milliseconds(1500));
  }
  SUBCASE("debug-hold-write with a unit") {
    REQUIRE(config.Set("debug-hold-write", "4096:2s").ok());
    CHECK(config.debug_hold_write()->offset == 4096u);
    CHECK(config.debug_hold_write()->duration == milliseconds(2000));
  }
  // Global keys do not count as single-export keys: they go with config= too.
  REQUIRE(config.Complete().ok());
}

TEST_CASE("bad fence-wait= and debug-hold-write= values name the key and the value") {
  PluginConfig config;
  const std::string help = ": not a duration (e.g. 30, 500ms, 5s)";
  for (const char* bad : {"", "abc", "-1", "5x", "1.5s", "99999999999h", "99999999999999999999"}) {
    CAPTURE(bad);
    CHECK(config.Set("fence-wait", bad).message() == std::string("fence-wait=") + bad + help);
  }
  CHECK(config.Set("fence-wait", "86400").ok());
  CHECK(config.Set("fence-wait", "1").message() ==
        "fence-wait=1: already given as fence-wait=86400");
  CHECK(config.Set("debug-hold-write", "1000").message() ==
        "debug-hold-write=1000: expected OFFSET:MILLISECONDS (e.g. 1M:1500)");
  CHECK(config.Set("debug-hold-write", "1X:1000").message() ==
        "debug-hold-write=1X:1000: offset '1X': not a size (e.g. 0, 1M)");
  CHECK(config.Set("debug-hold-write", "0:soon").message() ==
        "debug-hold-write=0:soon: milliseconds 'soon'" + help);
}

TEST_CASE("parallel-requests= is off unless given, once, as a boolean") {
  PluginConfig config;
  REQUIRE(config.Set("file", "/tmp/x.img").ok());
  CHECK_FALSE(config.parallel_requests());
  CHECK(config.Set("parallel-requests", "maybe").message() ==
        "parallel-requests=maybe: expected true or false");
  REQUIRE(config.Set("parallel-requests", "true").ok());
  CHECK(config.parallel_requests());
  CHECK(config.Set("parallel-requests", "false").message() ==
        "parallel-requests=false: already given as parallel-requests=true");
  REQUIRE(config.Complete().ok());
}

TEST_CASE("parallel-requests as a root key of a config file") {
  PluginConfig config;
  const Status s = LoadText("parallel-requests = true\n[[export]]\nname='a'\nfile='/x'\n", &config);
  REQUIRE_MESSAGE(s.ok(), s.message());
  CHECK(config.parallel_requests());
}

TEST_CASE("fence-wait and debug-hold-write in a config file") {
  SUBCASE("as root keys") {
    PluginConfig config;
    const Status s =
        LoadText("fence-wait = 7\ndebug-hold-write = \"8K:250\"\n[[export]]\nname='a'\nfile='/x'\n",
                 &config);
    REQUIRE_MESSAGE(s.ok(), s.message());
    CHECK(config.fence_wait() == std::chrono::seconds(7));
    CHECK(config.debug_hold_write()->offset == 8192u);
    CHECK(config.debug_hold_write()->duration == std::chrono::milliseconds(250));
  }
  SUBCASE("as a string, with config= and the other on the command line") {
    PluginConfig config;
    REQUIRE(config.Set("debug-hold-write", "0:10").ok());
    const Status s = LoadText("fence-wait = \"250ms\"\n[[export]]\nname='a'\nfile='/x'\n", &config);
    REQUIRE_MESSAGE(s.ok(), s.message());
    CHECK(config.fence_wait() == std::chrono::milliseconds(250));
    CHECK(config.debug_hold_write()->duration == std::chrono::milliseconds(10));
  }
  auto error_of = [](const std::string& text, std::vector<std::string> args = {}) {
    PluginConfig config;
    for (const auto& kv : args) {
      const auto eq = kv.find('=');
      REQUIRE(config.Set(kv.substr(0, eq), kv.substr(eq + 1)).ok());
    }
    std::string path;
    std::string msg = LoadText(text, &config, &path).message();
    const auto at = msg.find(path);
    if (at != std::string::npos) msg.replace(at, path.size(), "FILE");
    return msg;
  };
  const std::string exp = "[[export]]\nname='a'\nfile='/x'\n";
  CHECK(error_of("fence-wait = \"soon\"\n" + exp) ==
        "config=FILE:1: fence-wait: not a duration (e.g. 30, 500ms, 5s)");
  CHECK(error_of("fence-wait = -3\n" + exp) ==
        "config=FILE:1: fence-wait: expected a string or a non-negative integer");
  CHECK(error_of("\ndebug-hold-write = \"12\"\n" + exp) ==
        "config=FILE:2: debug-hold-write: expected OFFSET:MILLISECONDS (e.g. 1M:1500)");
  CHECK(error_of("fence-wait = 3\n" + exp, {"fence-wait=5"}) ==
        "config=FILE:1: fence-wait: already given as fence-wait=5");
}
