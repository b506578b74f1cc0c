#include "nbdkit-plugin/plugin_config.h"

#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>

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
