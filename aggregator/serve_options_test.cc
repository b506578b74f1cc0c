// serve's option table (serve_options.h) walked option by option: each option given on the
// command line and in a config file gives the same configuration, a value out of range or of the
// wrong kind is refused by both with the same message, and --help shows the defaults that
// ServeConfig{} holds. An option added to the table without a sample here fails the test.
#include "aggregator/serve_options.h"

#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>

#include <doctest/doctest.h>
#include <CLI/CLI.hpp>

#include "aggregator/serve_args.h"
#include "aggregator/serve_config_file.h"

namespace dst::aggregator::serve_options_test {
namespace {

const char* const kMember = "nbd://127.0.0.1:10809/x";
const std::string kDuration = "expected a duration such as 5, 500ms or 2m";

// A value that is not the default, and (when the option can be given a bad value on the command
// line) one that must be refused, with the message both refuse it with.
struct Sample {
  std::string good;
  std::string bad = "";
  std::string error = "";
};

const std::map<std::string, Sample> kServeSamples = {
    {"listen", {"127.0.0.1:9000", "nowhere", "expected HOST:PORT"}},
    {"unix", {"/run/dst/agg.sock"}},
    {"default", {"safe"}},
    {"raw", {"true"}},
    {"connections", {"4", "17", "expected 1 to 16"}},
    {"member-max-inflight", {"64", "0", "expected 1 to 65536"}},
    {"io-timeout", {"500ms", "5x", kDuration}},
    {"retries", {"7", "1000001", "expected 0 to 1000000"}},
    {"retry-window", {"2m", "soon", kDuration}},
    {"degrade-after", {"2s", "2 s", kDuration}},
    {"return-probe-interval", {"500ms", "5 s", kDuration}},
    {"keepalive", {"0", "1w", kDuration}},
    {"fencing", {"require", "yes", "expected auto, require or off"}},
    {"stats-interval", {"90s", "1.5s", kDuration}},
    {"table-cache", {"128M", "lots", "expected a size such as 64K"}},
    {"state-dir", {"/var/lib/dst"}},
    {"threads", {"3", "0", "expected 1 to 1024"}},
    {"workers", {"0", "1025", "expected 0 to 1024"}},
    {"resync-rate-min", {"4M", "0", "expected a size such as 64K, more than 0"}},
    {"resync-rate-max", {"1G", "fast", "expected a size such as 64K, more than 0"}},
    {"control", {"none"}},
    {"metrics", {"127.0.0.1:9100", "127.0.0.1:99999", "bad port '99999'"}},
    {"tls", {"require", "maybe", "expected off, on or require"}},
    {"tls-psk", {"/etc/dst/psk"}},
    {"tls-certificates", {"/etc/dst/pki"}},
    {"tls-verify-peer", {"true"}},
    {"max-connections", {"20", "0", "expected 1 to 1000000"}},
    {"max-connections-per-address", {"8", "-1", "expected 0 to 1000000"}},
    {"handshake-timeout", {"3s", "3 s", kDuration}},
    {"request-timeout", {"1h", "", kDuration}},
    {"max-inflight-per-client", {"4M", "0", "expected a size such as 64K, more than 0"}},
    {"max-inflight", {"1G", "1.5G", "expected a size such as 64K, more than 0"}},
    {"member-tls-psk", {"/etc/dst/member.psk"}},
    {"member-tls-username", {"aggregator"}},
    {"member-tls-certificates", {"/etc/dst/member-pki"}},
    {"member-tls-verify-peer", {"false"}},
};

const std::map<std::string, Sample> kVolumeSamples = {
    {"name", {"plain"}},
    {"description", {"striped over three nodes"}},
    {"layout", {"stripe", "raid5", "expected linear or stripe"}},
    {"chunk", {"128K", "1.5K", "expected a size such as 64K"}},
    {"key-file", {""}},         // a real key file: see KeyFile()
    {"passphrase-file", {""}},  // a real passphrase file
    {"allow-degraded", {"true"}},
    {"discard", {"1", "64", "expected 0 to 63"}},
    {"auto-resync", {"true"}},
    {"log", {"/var/lib/dst/vol0.log"}},
    {"log-size", {"64M", "0", "expected a size such as 64K, more than 0"}},
    {"log-retain", {"10m", "-1s", kDuration}},
    {"log-mode", {"write-through", "write-around", "expected write-back or write-through"}},
};

class TempFiles {
 public:
  TempFiles() {
    char dir[] = "/tmp/serve-options-test.XXXXXX";
    REQUIRE(::mkdtemp(dir) != nullptr);
    dir_ = dir;
  }
  ~TempFiles() { std::filesystem::remove_all(dir_); }
  // Mode 0600: key files others may read are refused.
  std::string Write(const std::string& name, const std::string& text) const {
    const std::string path = dir_ + "/" + name;
    std::ofstream(path, std::ios::binary) << text;
    std::filesystem::permissions(
        path, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
    return path;
  }

 private:
  std::string dir_;
};

// `dst-aggregator serve ARGS...` parsed by the real command definition, then applied.
Status FromCommandLine(std::vector<std::string> args, ServeConfig* config) {
  CLI::App app;
  ServeArgs serve_args;
  AddServeCommand(app, &serve_args);
  args.insert(args.begin(), {"dst-aggregator", "serve"});
  std::vector<char*> argv;
  for (std::string& a : args)
    argv.push_back(a.data());
  try {
    app.parse(static_cast<int>(argv.size()), argv.data());
  } catch (const CLI::ParseError& e) {
    return Status::Invalid(std::string("command line: ") + e.what());
  }
  return ServeConfigFromArgs(serve_args, config);
}

// How `value` is written in the file for an option of this form.
std::string TomlValue(OptionForm form, const std::string& value) {
  switch (form) {
    case OptionForm::kBoolean:
      return value;
    case OptionForm::kNumber:
      return value.find_first_not_of("0123456789") == std::string::npos && !value.empty()
                 ? value
                 : "\"" + value + "\"";
    case OptionForm::kTextList:
      return "[\"" + value + "\"]";
    default:
      return "\"" + value + "\"";
  }
}

// The command-line words for one value of an option of this form.
template <typename O>
std::vector<std::string> Flag(const O& option, const std::string& value) {
  const std::string name(option.name);
  if (option.form == OptionForm::kBoolean) return {value == "true" ? "--" + name : "--no-" + name};
  return {"--" + name, value};
}

// Every option's setting in `config`, as the table prints them.
std::map<std::string, std::string> Shown(const ServeConfig& config) {
  std::map<std::string, std::string> out;
  for (const ServeOption& o : ServeOptions())
    out[std::string(o.name)] = o.show(config);
  if (!config.volumes.empty())
    for (const VolumeOption& o : VolumeOptions())
      out["volume." + std::string(o.name)] = o.show(config.volumes[0]);
  return out;
}

TEST_CASE("every serve option is the same on the command line and in the config file") {
  TempFiles files;
  for (const ServeOption& option : ServeOptions()) {
    const std::string name(option.name);
    INFO("option " << name);
    REQUIRE_MESSAGE(kServeSamples.count(name), "no sample for the new option " << name);
    const Sample& sample = kServeSamples.at(name);
    const ServeConfig defaults;
    CHECK_MESSAGE(option.show(defaults) != sample.good, "the sample is the default");

    ServeConfig from_args;
    std::vector<std::string> args = Flag(option, sample.good);
    args.push_back(kMember);
    const Status args_status = FromCommandLine(args, &from_args);
    REQUIRE_MESSAGE(args_status.ok(), args_status.message());
    const std::string toml = name + " = " + TomlValue(option.form, sample.good) +
                             "\n[[volume]]\nmembers = [\"" + kMember + "\"]\n";
    const std::string path = files.Write("serve.toml", toml);
    ServeConfig from_file;
    const Status file_status = FromCommandLine({"--config", path}, &from_file);
    REQUIRE_MESSAGE(file_status.ok(), file_status.message());

    CHECK(option.show(from_args) == sample.good);
    CHECK(Shown(from_args) == Shown(from_file));
  }
  CHECK(kServeSamples.size() == ServeOptions().size());
}

TEST_CASE("a bad value is refused by the command line and the config file with one message") {
  TempFiles files;
  for (const ServeOption& option : ServeOptions()) {
    const std::string name(option.name);
    const Sample& sample = kServeSamples.at(name);
    if (sample.error.empty()) continue;
    INFO("option " << name << " = '" << sample.bad << "'");
    ServeConfig from_args;
    const Status cli = FromCommandLine({"--" + name, sample.bad, kMember}, &from_args);
    CHECK(cli.message() == "--" + name + " " + sample.bad + ": " + sample.error);

    const std::string path =
        files.Write("bad.toml", name + " = " + TomlValue(option.form, sample.bad) + "\n");
    ServeConfig from_file;
    const Status file = FromCommandLine({"--config", path}, &from_file);
    // A list's item is named by its value, as on the command line.
    const std::string where =
        path + ":1: " + name + (option.form == OptionForm::kTextList ? " " + sample.bad : "");
    CHECK(file.message() == where + ": " + sample.error);
  }
  // What only a file can get wrong: the kind of value.
  const std::string path = files.Write("kinds.toml", "raw = \"yes\"\n");
  ServeConfig config;
  CHECK(FromCommandLine({"--config", path}, &config).message() ==
        path + ":1: raw: expected true or false");
  const std::string numbers = files.Write("numbers.toml", "connections = true\n");
  CHECK(FromCommandLine({"--config", numbers}, &config).message() ==
        numbers + ":1: connections: expected 1 to 16");
}

TEST_CASE("every volume option is the same on the command line and in a [[volume]] table") {
  TempFiles files;
  const std::string key = files.Write("volume.key", std::string(32, 'k'));
  const std::string passphrase = files.Write("volume.pass", "correct horse battery staple\n");
  for (const VolumeOption& option : VolumeOptions()) {
    const std::string name(option.name);
    INFO("volume option " << name);
    REQUIRE_MESSAGE(kVolumeSamples.count(name), "no sample for the new option " << name);
    const Sample& sample = kVolumeSamples.at(name);
    const std::string good =
        name == "key-file" ? key : (name == "passphrase-file" ? passphrase : sample.good);

    ServeConfig from_args;
    REQUIRE(FromCommandLine({"--raw", "--" + name, good, kMember}, &from_args).ok());
    const std::string path = files.Write("volume.toml", "raw = true\n[[volume]]\n" + name + " = " +
                                                            TomlValue(option.form, good) +
                                                            "\nmembers = [\"" + kMember + "\"]\n");
    ServeConfig from_file;
    const Status file_status = FromCommandLine({"--config", path}, &from_file);
    REQUIRE_MESSAGE(file_status.ok(), file_status.message());
    REQUIRE(from_args.volumes.size() == 1);
    CHECK(option.show(from_args.volumes[0]) == good);
    CHECK(Shown(from_args) == Shown(from_file));
    CHECK(from_args.volumes[0].layout_given == from_file.volumes[0].layout_given);

    if (sample.error.empty()) continue;
    const Status cli = FromCommandLine({"--raw", "--" + name, sample.bad, kMember}, &from_args);
    CHECK(cli.message() == "--" + name + " " + sample.bad + ": " + sample.error);
    const std::string bad = files.Write(
        "bad.toml", "[[volume]]\n" + name + " = " + TomlValue(option.form, sample.bad) + "\n");
    CHECK(FromCommandLine({"--config", bad}, &from_file).message() ==
          bad + ":2: " + name + ": " + sample.error);
  }
  CHECK(kVolumeSamples.size() == VolumeOptions().size());
}

TEST_CASE("--help shows the defaults ServeConfig{} holds, and they read back to themselves") {
  CLI::App app;
  ServeArgs args;
  CLI::App* serve = AddServeCommand(app, &args);
  const ServeConfig defaults;
  for (const ServeOption& option : ServeOptions()) {
    const std::string shown = option.show(defaults);
    INFO("option " << option.name << " default '" << shown << "'");
    if (option.form != OptionForm::kBoolean)
      CHECK(serve->get_option("--" + std::string(option.name))->get_default_str() == shown);
    if (shown.empty()) continue;
    ServeConfig config;
    REQUIRE(option.apply(shown, &config).ok());
    CHECK(Shown(config) == Shown(defaults));
  }
  CHECK(serve->get_option("--io-timeout")->get_default_str() == "5s");
  CHECK(serve->get_option("--retry-window")->get_default_str() == "1m");
  CHECK(serve->get_option("--max-inflight-per-client")->get_default_str() == "64M");
  CHECK(serve->get_option("--chunk")->get_default_str() == "64K");
  CHECK(serve->get_option("--layout")->get_default_str() == "linear");
  CHECK(serve->get_option("--degrade-after")->get_default_str() == "10s");
  CHECK(serve->get_option("--return-probe-interval")->get_default_str() == "5s");
}

TEST_CASE("--allow-degraded and --discard are for mirror and raid10: raw volumes refuse them") {
  TempFiles files;
  ServeConfig config;
  REQUIRE(FromCommandLine({"--raw", "--allow-degraded", kMember}, &config).ok());
  CHECK(ValidateServeConfig(config).message() ==
        "volume vol0: --allow-degraded and --discard are for mirror and raid10 volumes, which "
        "are never raw");
  ServeConfig discard;
  REQUIRE(FromCommandLine({"--raw", "--discard", "0", kMember}, &discard).ok());
  CHECK(ValidateServeConfig(discard).message() ==
        "volume vol0: --allow-degraded and --discard are for mirror and raid10 volumes, which "
        "are never raw");
  // Assembled volumes keep them until their superblocks say which layout they have.
  ServeConfig assembled;
  REQUIRE(
      FromCommandLine({"--allow-degraded", "--discard", "1", kMember, kMember}, &assembled).ok());
  CHECK(ValidateServeConfig(assembled).ok());
  CHECK(assembled.volumes[0].allow_degraded);
  CHECK(assembled.volumes[0].discard_slot == 1u);
}

TEST_CASE("a staging log: --log-size needs --log, and two volumes cannot share one log") {
  ServeConfig config;
  REQUIRE(FromCommandLine({"--raw", "--log-size", "64M", kMember}, &config).ok());
  CHECK(ValidateServeConfig(config).message() == "volume vol0: --log-size without --log");
  ServeConfig one;
  REQUIRE(
      FromCommandLine({"--raw", "--log", "/tmp/a.log", "--log-size", "64M", kMember}, &one).ok());
  CHECK(ValidateServeConfig(one).ok());
  CHECK(one.volumes[0].log_path == "/tmp/a.log");
  CHECK(one.volumes[0].log_size == 64u << 20);
  CHECK(one.volumes[0].log_retain.count() == 0);
  ServeConfig retain;
  REQUIRE(FromCommandLine({"--raw", "--log-retain", "10m", kMember}, &retain).ok());
  CHECK(ValidateServeConfig(retain).message() == "volume vol0: --log-retain without --log");
  ServeConfig retained;
  REQUIRE(
      FromCommandLine({"--raw", "--log", "/tmp/a.log", "--log-retain", "10m", kMember}, &retained)
          .ok());
  CHECK(ValidateServeConfig(retained).ok());
  CHECK(retained.volumes[0].log_retain == std::chrono::minutes(10));
  TempFiles files;
  const std::string path = files.Write(
      "logs.toml", "raw = true\n[[volume]]\nname = \"a\"\nlog = \"/tmp/x.log\"\nmembers = [\"" +
                       std::string(kMember) +
                       "\"]\n[[volume]]\nname = \"b\"\nlog = \"/tmp/x.log\"\nmembers = [\"" +
                       std::string(kMember) + "\"]\n");
  ServeConfig shared;
  REQUIRE(FromCommandLine({"--config", path}, &shared).ok());
  CHECK(ValidateServeConfig(shared).message() ==
        "volume b: staging log /tmp/x.log is already another volume's");
  ServeConfig mode_alone;
  REQUIRE(FromCommandLine({"--raw", "--log-mode", "write-through", kMember}, &mode_alone).ok());
  CHECK(ValidateServeConfig(mode_alone).message() == "volume vol0: --log-mode without --log");
  ServeConfig through;
  REQUIRE(FromCommandLine({"--raw", "--log", "/tmp/a.log", "--log-mode", "write-through", kMember},
                          &through)
              .ok());
  CHECK(ValidateServeConfig(through).ok());
  CHECK(through.volumes[0].log_mode == "write-through");
  ServeConfig through_retained;
  REQUIRE(FromCommandLine({"--raw", "--log", "/tmp/a.log", "--log-mode", "write-through",
                           "--log-retain", "1h", kMember},
                          &through_retained)
              .ok());
  CHECK(ValidateServeConfig(through_retained).message() ==
        "volume vol0: --log-retain is for write-back logs: a write-through log keeps every point "
        "its size allows");
}

TEST_CASE("raw volumes are linear or stripe: mirror and raid10 need the member format") {
  TempFiles files;
  for (const std::string layout : {"mirror", "raid10"}) {
    INFO("layout " << layout);
    const std::string why =
        ": mirror and raid10 need the member format: create the volume with "
        "dst-aggregator create --layout " +
        layout + " and serve it without --raw and --layout";
    ServeConfig config;
    CHECK(FromCommandLine({"--raw", "--layout", layout, kMember, kMember}, &config).message() ==
          "--layout " + layout + why);
    CHECK(FromCommandLine({"--layout", layout, kMember, kMember}, &config).message() ==
          "--layout " + layout + why);
    const std::string path =
        files.Write("mirror.toml", "raw = true\n[[volume]]\nlayout = \"" + layout +
                                       "\"\nmembers = [\"" + std::string(kMember) + "\"]\n");
    CHECK(FromCommandLine({"--config", path}, &config).message() == path + ":3: layout" + why);
  }
}

TEST_CASE("--no-auto-resync leaves stale copies stale; raw volumes refuse it") {
  ServeConfig config;
  REQUIRE(FromCommandLine({kMember, kMember}, &config).ok());
  CHECK(config.volumes[0].auto_resync);
  ServeConfig off;
  REQUIRE(FromCommandLine({"--no-auto-resync", kMember, kMember}, &off).ok());
  CHECK_FALSE(off.volumes[0].auto_resync);
  ServeConfig raw;
  REQUIRE(FromCommandLine({"--raw", "--no-auto-resync", kMember}, &raw).ok());
  CHECK(ValidateServeConfig(raw).message() ==
        "volume vol0: --no-auto-resync is for mirror and raid10 volumes, which are never raw");
  TempFiles files;
  const std::string path =
      files.Write("serve.toml", "[[volume]]\nauto-resync = false\nmembers = [\"" +
                                    std::string(kMember) + "\"]\n");
  ServeConfig from_file;
  REQUIRE(FromCommandLine({"--config", path}, &from_file).ok());
  CHECK_FALSE(from_file.volumes[0].auto_resync);
}

TEST_CASE("--return-probe-interval: 5s by default, 0 turns the probes off") {
  ServeConfig config;
  REQUIRE(FromCommandLine({kMember, kMember}, &config).ok());
  CHECK(config.return_probe_interval == std::chrono::seconds(5));
  ServeConfig off;
  REQUIRE(FromCommandLine({"--return-probe-interval", "0", kMember, kMember}, &off).ok());
  CHECK(off.return_probe_interval.count() == 0);
  ServeConfig bad;
  CHECK(FromCommandLine({"--return-probe-interval", "1.5s", kMember}, &bad).message() ==
        "--return-probe-interval 1.5s: " + kDuration);
  TempFiles files;
  const std::string path =
      files.Write("serve.toml", "return-probe-interval = \"250ms\"\n[[volume]]\nmembers = [\"" +
                                    std::string(kMember) + "\"]\n");
  ServeConfig from_file;
  REQUIRE(FromCommandLine({"--config", path}, &from_file).ok());
  CHECK(from_file.return_probe_interval == std::chrono::milliseconds(250));
}

TEST_CASE("the file's keys override the command line's, lists add up") {
  TempFiles files;
  const std::string path = files.Write(
      "serve.toml", "io-timeout = \"2s\"\nlisten = [\"127.0.0.1:2\"]\n[[volume]]\nmembers = [\"" +
                        std::string(kMember) + "\"]\n");
  ServeConfig config;
  REQUIRE(FromCommandLine(
              {"--io-timeout", "9s", "--retries", "3", "--listen", "127.0.0.1:1", "--config", path},
              &config)
              .ok());
  CHECK(config.transactions.io_timeout == std::chrono::seconds(2));
  CHECK(config.transactions.retries == 3);
  CHECK(config.listen == std::vector<std::string>{"127.0.0.1:1", "127.0.0.1:2"});
}

TEST_CASE("volume options and member URIs belong in the file with --config") {
  TempFiles files;
  const std::string path =
      files.Write("serve.toml", "[[volume]]\nmembers = [\"" + std::string(kMember) + "\"]\n");
  ServeConfig config;
  CHECK(
      FromCommandLine({"--description", "x", "--config", path}, &config).message() ==
      "--config: give --name, --description, --layout, --chunk, --key-file, --passphrase-file, "
      "--allow-degraded, --auto-resync, --discard, --log, --log-size, --log-retain and --log-mode "
      "in the "
      "file's "
      "[[volume]] tables");
  CHECK(FromCommandLine({"--config", path, kMember}, &config).message() ==
        "--config cannot be combined with member URIs");
}

TEST_CASE("without a listener, serve listens on 127.0.0.1:10809") {
  ServeConfig config;
  REQUIRE(FromCommandLine({kMember}, &config).ok());
  CHECK(config.listen == std::vector<std::string>{"127.0.0.1:10809"});
  ServeConfig with_unix;
  REQUIRE(FromCommandLine({"--unix", "/run/a.sock", kMember}, &with_unix).ok());
  CHECK(with_unix.listen.empty());
}

TEST_CASE("serve options: the resync rates default to 1M and 200M, and min may not pass max") {
  ServeConfig config;
  REQUIRE(FromCommandLine({kMember}, &config).ok());
  CHECK(config.resync_rate_min == uint64_t{1} << 20);
  CHECK(config.resync_rate_max == uint64_t{200} << 20);
  CHECK(ValidateServeConfig(config).ok());
  ServeConfig both;
  REQUIRE(FromCommandLine({"--resync-rate-min", "10M", "--resync-rate-max", "50M", kMember}, &both)
              .ok());
  CHECK(both.resync_rate_min == uint64_t{10} << 20);
  CHECK(both.resync_rate_max == uint64_t{50} << 20);
  ServeConfig crossed;
  REQUIRE(FromCommandLine({"--resync-rate-min", "300M", kMember}, &crossed).ok());
  CHECK(ValidateServeConfig(crossed).message() ==
        "resync-rate-min must be more than 0 and at most resync-rate-max");
}

TEST_CASE("serve options: workers default to the online cores; 0 keeps all on the loop") {
  ServeConfig config;
  REQUIRE(FromCommandLine({kMember}, &config).ok());
  CHECK(config.workers == DefaultWorkerCount());
  CHECK(config.workers >= 1);
  ServeConfig none;
  REQUIRE(FromCommandLine({"--workers", "0", kMember}, &none).ok());
  CHECK(none.workers == 0);
  TempFiles files;
  const std::string path = files.Write(
      "workers.toml", "workers = 3\n[[volume]]\nmembers = [\"" + std::string(kMember) + "\"]\n");
  ServeConfig from_file;
  REQUIRE(FromCommandLine({"--config", path}, &from_file).ok());
  CHECK(from_file.workers == 3);
  CHECK(FromCommandLine({"--workers", "-1", kMember}, &config).message() ==
        "--workers -1: expected 0 to 1024");
}

}  // namespace
}  // namespace dst::aggregator::serve_options_test
