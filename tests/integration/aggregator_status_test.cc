// Integration tests of what a running dst-aggregator tells about itself: `dst-aggregator status`
// over the control socket (table and JSON), the raw control protocol, the Prometheus metrics
// endpoint, and `serve --check-config`. Members are nbdkit processes serving our plugin on temp
// files (killable, to see a member's state change); the aggregator, fio and the status command are
// the real binaries. status --json is parsed by Python's json module, so the document has to be
// valid JSON; the metrics are parsed by a strict parser of the text exposition format here, and
// checked value by value against status --json taken right after.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <vector>

#include "tests/harness/aggregator_process.h"
#include "tests/integration/plugin_fixture.h"
#include "tests/integration/volume_fixture.h"

namespace dst::test::aggregator_status_test {
namespace {

using namespace std::chrono_literals;
using SteadyClock = std::chrono::steady_clock;

// ---------------------------------------------------------------------------
// Processes.

// nbdkit serving our plugin on a file in `dir`; a test may SIGKILL it. On teardown it must exit
// 0 with no sanitizer report, unless it was killed.
class Member : public NbdkitServer {
 public:
  Member(const TempDir& dir, const std::string& name, uint64_t size)
      : NbdkitServer(PluginOptions({"file=" + dir.File(name), "size=" + std::to_string(size)})) {}
  ~Member() {
    const int code = Stop();
    if (killed_) return;
    CHECK_MESSAGE(code == 0, "nbdkit exit code " << code << "\n" << stderr_text());
    CHECK_MESSAGE(SanitizerReports().empty(), "sanitizer reports in nbdkit's stderr:\n"
                                                  << stderr_text());
  }

  // SIGKILL, and waits (bounded) until the process is gone.
  void KillHard() {
    killed_ = true;
    KillAndWait();
  }

 private:
  bool killed_ = false;
};

// `count` members of `size` bytes, on files in a TempDir of their own.
class Members {
 public:
  Members(size_t count, uint64_t size) {
    for (size_t i = 0; i < count; ++i) {
      servers_.push_back(
          std::make_unique<Member>(dir_, "member" + std::to_string(i) + ".img", size));
      uris_.push_back(servers_.back()->uri());
    }
  }
  const std::vector<std::string>& uris() const { return uris_; }
  const std::string& uri(size_t i) const { return uris_.at(i); }
  Member& member(size_t i) { return *servers_.at(i); }
  std::string file(size_t i) const { return dir_.File("member" + std::to_string(i) + ".img"); }

 private:
  TempDir dir_{"dst-status-members"};
  std::vector<std::unique_ptr<Member>> servers_;
  std::vector<std::string> uris_;
};

// dst-aggregator serve (with --control in its TempDir, from the harness); on teardown checks
// that SIGTERM stopped it with exit code 0 and that no sanitizer reported anything.
class Aggregator : public AggregatorServer {
 public:
  explicit Aggregator(std::vector<std::string> args)
      : AggregatorServer(ServeOptions(std::move(args))) {}
  ~Aggregator() {
    const int code = Stop();
    CHECK_MESSAGE(code == 0, "dst-aggregator exit code " << code << "\n" << stderr_text());
    CHECK_MESSAGE(SanitizerReports().empty(), "sanitizer reports:\n" << stderr_text());
  }
};

// `dst-aggregator status --control PATH [--json]`, which must succeed with nothing on stderr.
std::string StatusOk(const std::string& control, bool json) {
  std::vector<std::string> args = {"status", "--control", control};
  if (json) args.push_back("--json");
  const CommandResult r = RunAggregator(args);
  INFO("status stdout:\n" << r.stdout_text << "stderr:\n" << r.stderr_text);
  REQUIRE(r.exit_code == 0);
  CHECK(r.stderr_text.empty());
  return r.stdout_text;
}

std::string Quoted(const std::string& s) {
  return "\"" + s + "\"";
}

std::string QuotedList(const std::vector<std::string>& items) {
  std::string out = "[";
  for (size_t i = 0; i < items.size(); ++i)
    out += (i ? ", " : "") + Quoted(items[i]);
  return out + "]";
}

// The lines of `text`, without their newlines.
std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line))
    out.push_back(line);
  return out;
}

std::vector<std::string> Words(const std::string& line) {
  std::vector<std::string> out;
  std::istringstream in(line);
  std::string word;
  while (in >> word)
    out.push_back(word);
  return out;
}

// A size as the table prints it: the largest binary unit that divides it, "16 MiB", "4 KiB".
std::string TableSize(uint64_t bytes) {
  static constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  size_t unit = 0;
  while (bytes != 0 && bytes % 1024 == 0 && unit < 6) {
    bytes /= 1024;
    ++unit;
  }
  return std::to_string(bytes) + " " + kUnits[unit];
}

// ---------------------------------------------------------------------------
// status --json, read by Python's json module and flattened to "path<TAB>type<TAB>value" lines:
// "volumes.0.requests i 12", "members.1.state s ready", "volumes a 2", "volumes.0 o".

constexpr const char* kFlattenJson = R"(
import json, sys
doc = json.loads(sys.argv[1])
def walk(path, v):
    key = ".".join(path)
    if isinstance(v, dict):
        print(key + "\to\t")
        for k, x in v.items():
            assert "." not in k and "\t" not in k, k
            walk(path + [k], x)
    elif isinstance(v, list):
        print(key + "\ta\t" + str(len(v)))
        for i, x in enumerate(v):
            walk(path + [str(i)], x)
    elif isinstance(v, bool):
        print(key + "\tb\t" + ("true" if v else "false"))
    elif isinstance(v, int):
        print(key + "\ti\t" + str(v))
    elif isinstance(v, str):
        assert "\t" not in v and "\n" not in v, v
        print(key + "\ts\t" + v)
    else:
        print(key + "\t?\t" + repr(v))
assert isinstance(doc, dict), "not an object"
walk([], doc)
)";

class Json {
 public:
  explicit Json(const std::string& text) : text_(text) {
    const CommandResult r = RunCommand({kPython3, "-c", kFlattenJson, text}, 30s);
    if (r.exit_code != 0)
      throw std::runtime_error("status --json is not valid JSON:\n" + text + "\n" + r.stderr_text);
    for (const std::string& line : Lines(r.stdout_text)) {
      const size_t a = line.find('\t');
      const size_t b = line.find('\t', a + 1);
      if (a == std::string::npos || b == std::string::npos)
        throw std::runtime_error("bad flattened line: " + line);
      values_[line.substr(0, a)] = {line[a + 1], line.substr(b + 1)};
    }
  }

  const std::string& text() const { return text_; }
  bool Has(const std::string& key) const { return values_.count(key) != 0; }
  char Type(const std::string& key) const { return Get(key).first; }

  uint64_t Num(const std::string& key) const { return std::stoull(Typed(key, 'i')); }
  const std::string& Str(const std::string& key) const { return Typed(key, 's'); }
  bool Bool(const std::string& key) const { return Typed(key, 'b') == "true"; }
  size_t Size(const std::string& key) const { return std::stoull(Typed(key, 'a')); }

  // The keys of the object at `path` ("" for the document), sorted.
  std::set<std::string> Keys(const std::string& path) const {
    Typed(path, 'o');
    const std::string prefix = path.empty() ? "" : path + ".";
    std::set<std::string> out;
    for (const auto& [key, value] : values_) {
      if (key.empty() || key.rfind(prefix, 0) != 0) continue;
      const std::string rest = key.substr(prefix.size());
      if (rest.find('.') == std::string::npos) out.insert(rest);
    }
    return out;
  }

 private:
  const std::pair<char, std::string>& Get(const std::string& key) const {
    auto it = values_.find(key);
    if (it == values_.end())
      throw std::runtime_error("status --json has no " + key + ":\n" + text_);
    return it->second;
  }
  const std::string& Typed(const std::string& key, char type) const {
    const auto& [t, value] = Get(key);
    if (t != type)
      throw std::runtime_error("status --json " + key + " has type " + t + ", expected " + type +
                               ":\n" + text_);
    return value;
  }

  std::string text_;
  std::map<std::string, std::pair<char, std::string>> values_;
};

std::string V(size_t volume, const std::string& field) {
  return "volumes." + std::to_string(volume) + "." + field;
}
std::string M(size_t member, const std::string& field) {
  return "members." + std::to_string(member) + "." + field;
}

Json StatusJson(const std::string& control) {
  return Json(StatusOk(control, true));
}

const std::set<std::string> kVolumeKeys = {
    "name",       "layout",         "checksummed",    "size",
    "members",    "clients",        "connections",    "requests_in_flight",
    "requests",   "request_errors", "reads",          "writes",
    "read_bytes", "written_bytes",  "latency_avg_us", "latency_max_us"};
const std::set<std::string> kIntegrityKeys = {"state",
                                              "checksum",
                                              "checksum_errors",
                                              "rereads_recovered",
                                              "rmw_blocks",
                                              "recomputed_regions",
                                              "recomputed_bytes",
                                              "recovery_unverified",
                                              "dirty_regions",
                                              "bitmap_syncs",
                                              "table_pages",
                                              "table_dirty",
                                              "table_loads",
                                              "table_writebacks",
                                              "table_evictions",
                                              "table_errors",
                                              "table_unverified",
                                              "table_rolled_back",
                                              "table_anchor_errors",
                                              "scrub_blocks",
                                              "scrub_errors",
                                              "scrub_repaired",
                                              "scrub_unrecoverable",
                                              "scrub_last_completed",
                                              "scrub_last_clean"};
// A checksummed volume's background work: its rates (and its jobs, none in these tests).
const std::set<std::string> kBackgroundRates = {"rate_min_bytes", "rate_max_bytes"};
const std::set<std::string> kMemberKeys = {"volume",
                                           "index",
                                           "uri",
                                           "state",
                                           "fenced",
                                           "epoch",
                                           "connections",
                                           "in_flight",
                                           "waiting",
                                           "ios",
                                           "bytes",
                                           "timeouts",
                                           "errors",
                                           "resends",
                                           "reconnects",
                                           "connect_failures",
                                           "failures",
                                           "pings",
                                           "latency_avg_us",
                                           "latency_max_us",
                                           "checksum_errors"};

// Checks the shape of a status document: the keys of the spec, with the right types.
void CheckShape(const Json& s) {
  INFO("status --json:\n" << s.text());
  // "mapped": the kernel devices `map` attached on this machine, which the CLI adds (the control
  // socket's own answer has none).
  std::set<std::string> keys = s.Keys("");
  if (keys.erase("mapped") == 1) CHECK(s.Type("mapped") == 'a');
  CHECK(keys == std::set<std::string>{"uptime_seconds", "loop_clients", "volumes", "members"});
  CHECK(s.Type("uptime_seconds") == 'i');
  CHECK(s.Type("loop_clients") == 'a');
  CHECK(s.Size("loop_clients") >= 1);
  for (size_t i = 0; i < s.Size("loop_clients"); ++i)
    CHECK(s.Type("loop_clients." + std::to_string(i)) == 'i');
  for (size_t v = 0; v < s.Size("volumes"); ++v) {
    const std::string path = "volumes." + std::to_string(v);
    std::set<std::string> want = kVolumeKeys;
    if (s.Bool(V(v, "checksummed"))) want.insert({"integrity", "background"});
    CHECK(s.Keys(path) == want);
    for (const std::string& k : kVolumeKeys) {
      const char type = k == "name" || k == "layout" ? 's' : k == "checksummed" ? 'b' : 'i';
      CHECK_MESSAGE(s.Type(V(v, k)) == type, V(v, k));
    }
    if (s.Bool(V(v, "checksummed"))) {
      CHECK(s.Keys(V(v, "integrity")) == kIntegrityKeys);
      for (const std::string& k : kIntegrityKeys) {
        const char type = k == "state" || k == "checksum" ? 's' : 'i';
        CHECK_MESSAGE(s.Type(V(v, "integrity." + k)) == type, V(v, "integrity." + k));
      }
      for (const std::string& k : kBackgroundRates)
        CHECK_MESSAGE(s.Type(V(v, "background." + k)) == 'i', V(v, "background." + k));
    }
  }
  for (size_t m = 0; m < s.Size("members"); ++m) {
    CHECK(s.Keys("members." + std::to_string(m)) == kMemberKeys);
    for (const std::string& k : kMemberKeys) {
      const char type = k == "volume" || k == "uri" || k == "state" ? 's'
                        : k == "fenced"                             ? 'b'
                                                                    : 'i';
      CHECK_MESSAGE(s.Type(M(m, k)) == type, M(m, k));
    }
    const std::string state = s.Str(M(m, "state"));
    CHECK_MESSAGE(
        (state == "connecting" || state == "ready" || state == "reconnecting" || state == "failed"),
        M(m, "state") << " = " << state);
  }
}

size_t VolumeIndex(const Json& s, const std::string& name) {
  for (size_t v = 0; v < s.Size("volumes"); ++v)
    if (s.Str(V(v, "name")) == name) return v;
  throw std::runtime_error("status --json has no volume " + name + ":\n" + s.text());
}

size_t MemberIndex(const Json& s, const std::string& volume, uint64_t index) {
  for (size_t m = 0; m < s.Size("members"); ++m)
    if (s.Str(M(m, "volume")) == volume && s.Num(M(m, "index")) == index) return m;
  throw std::runtime_error("status --json has no member " + std::to_string(index) + " of volume " +
                           volume + ":\n" + s.text());
}

// Polls status --json every 50 ms until `done` holds; the last document, or throws after
// `timeout`.
template <typename Done>
Json WaitForStatus(const std::string& control, Done done, std::chrono::milliseconds timeout,
                   const std::string& what) {
  const auto deadline = SteadyClock::now() + timeout;
  for (;;) {
    Json s = StatusJson(control);
    if (done(s)) return s;
    if (SteadyClock::now() > deadline)
      throw std::runtime_error("timed out waiting for " + what + "; last status:\n" + s.text());
    std::this_thread::sleep_for(50ms);
  }
}

// ---------------------------------------------------------------------------
// Sockets, every wait bounded.

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

int ConnectUnix(const std::string& path) {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  REQUIRE(path.size() < sizeof address.sun_path);
  std::memcpy(address.sun_path, path.c_str(), path.size() + 1);
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
    const int err = errno;
    ::close(fd);
    FAIL("connect to " << path << ": " << std::strerror(err));
  }
  return fd;
}

int ConnectLoopback(int port) {
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
    const int err = errno;
    ::close(fd);
    FAIL("connect to 127.0.0.1:" << port << ": " << std::strerror(err));
  }
  return fd;
}

void SendAll(int fd, const std::string& data) {
  size_t sent = 0;
  while (sent < data.size()) {
    const ssize_t n = ::send(fd, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    REQUIRE_MESSAGE(n > 0, "send: " << std::strerror(errno));
    sent += static_cast<size_t>(n);
  }
}

// Everything the peer sends until it closes; throws if that takes more than `timeout`.
std::string ReadToEof(int fd, std::chrono::milliseconds timeout = 5s) {
  const auto deadline = SteadyClock::now() + timeout;
  std::string out;
  char buffer[4096];
  for (;;) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - SteadyClock::now());
    if (left.count() <= 0)
      throw std::runtime_error("the server did not close the connection in time; got:\n" + out);
    pollfd p{fd, POLLIN, 0};
    const int ready = ::poll(&p, 1, static_cast<int>(left.count()));
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) continue;
    const ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == ECONNRESET) return out;
    if (n < 0) throw std::runtime_error(std::string("read: ") + std::strerror(errno));
    if (n == 0) return out;
    out.append(buffer, static_cast<size_t>(n));
  }
}

// One request on the control socket, and the whole answer.
std::string ControlRequest(const std::string& path, const std::string& request) {
  Fd fd(ConnectUnix(path));
  SendAll(fd.get(), request);
  return ReadToEof(fd.get());
}

struct HttpAnswer {
  std::string status_line;
  std::map<std::string, std::string> headers;  // names in lower case
  std::string body;
};

// Sends `request` to 127.0.0.1:port and splits the answer (which must be a whole HTTP response
// whose Content-Length matches its body).
HttpAnswer Http(int port, const std::string& request) {
  Fd fd(ConnectLoopback(port));
  SendAll(fd.get(), request);
  const std::string raw = ReadToEof(fd.get());
  INFO("HTTP answer:\n" << raw);
  const size_t end = raw.find("\r\n\r\n");
  REQUIRE(end != std::string::npos);
  HttpAnswer a;
  std::vector<std::string> head;
  for (size_t at = 0; at <= end;) {
    const size_t eol = raw.find("\r\n", at);
    head.push_back(raw.substr(at, eol - at));
    at = eol + 2;
  }
  REQUIRE(!head.empty());
  a.status_line = head[0];
  for (size_t i = 1; i < head.size(); ++i) {
    const size_t colon = head[i].find(':');
    REQUIRE_MESSAGE(colon != std::string::npos, "bad header line " << head[i]);
    std::string name = head[i].substr(0, colon);
    std::transform(name.begin(), name.end(), name.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    std::string value = head[i].substr(colon + 1);
    value.erase(0, value.find_first_not_of(' '));
    a.headers[name] = value;
  }
  a.body = raw.substr(end + 4);
  REQUIRE(a.headers.count("content-length"));
  CHECK(std::stoull(a.headers["content-length"]) == a.body.size());
  return a;
}

std::string GetRequest(const std::string& path) {
  return "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: dst-test\r\n\r\n";
}

// ---------------------------------------------------------------------------
// The Prometheus text exposition format (0.0.4), parsed strictly: every sample belongs to the
// metric of the HELP and TYPE lines just before it, counters end in _total and gauges do not,
// names and labels have the allowed syntax, label values are quoted with \\, \" and \n escapes,
// no (name, labels) pair repeats, and every value is a non-negative integer.

struct Sample {
  std::string name;
  std::map<std::string, std::string> labels;
  uint64_t value = 0;
  std::string line;
};

struct Exposition {
  std::map<std::string, std::string> help;
  std::map<std::string, std::string> type;
  std::vector<Sample> samples;
};

bool ValidName(const std::string& name, bool colon_allowed) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(name[i]);
    const bool ok =
        std::isalpha(c) || c == '_' || (colon_allowed && c == ':') || (i > 0 && std::isdigit(c));
    if (!ok) return false;
  }
  return true;
}

// Parses `{a="x",b="y"}` at text[at]; returns the labels and moves `at` past the brace.
std::map<std::string, std::string> ParseLabels(const std::string& line, size_t& at) {
  std::map<std::string, std::string> labels;
  REQUIRE(line[at] == '{');
  ++at;
  while (at < line.size() && line[at] != '}') {
    const size_t eq = line.find('=', at);
    REQUIRE_MESSAGE(eq != std::string::npos, "label without '=': " << line);
    const std::string name = line.substr(at, eq - at);
    CHECK_MESSAGE(ValidName(name, false), "bad label name '" << name << "': " << line);
    CHECK_MESSAGE(name.rfind("__", 0) != 0, "reserved label name: " << line);
    at = eq + 1;
    REQUIRE_MESSAGE((at < line.size() && line[at] == '"'), "unquoted label value: " << line);
    ++at;
    std::string value;
    for (;;) {
      REQUIRE_MESSAGE(at < line.size(), "unterminated label value: " << line);
      const char c = line[at++];
      if (c == '"') break;
      if (c == '\\') {
        REQUIRE_MESSAGE(at < line.size(), "dangling escape: " << line);
        const char e = line[at++];
        CHECK_MESSAGE((e == '\\' || e == '"' || e == 'n'), "bad escape \\" << e << ": " << line);
        value += e == 'n' ? '\n' : e;
        continue;
      }
      value += c;
    }
    CHECK_MESSAGE(labels.emplace(name, value).second, "label " << name << " twice: " << line);
    REQUIRE(at < line.size());
    if (line[at] == ',')
      ++at;
    else
      REQUIRE_MESSAGE(line[at] == '}', "expected ',' or '}': " << line);
  }
  REQUIRE_MESSAGE(at < line.size(), "unterminated label set: " << line);
  ++at;
  return labels;
}

Exposition ParseExposition(const std::string& text) {
  INFO("metrics:\n" << text);
  Exposition e;
  REQUIRE(!text.empty());
  CHECK(text.back() == '\n');
  std::string current;  // the metric whose HELP and TYPE came last
  std::set<std::string> finished;
  std::set<std::string> series;
  for (const std::string& line : Lines(text)) {
    CHECK_MESSAGE(!line.empty(), "empty line in the exposition");
    if (line.empty()) continue;
    if (line[0] == '#') {
      const std::vector<std::string> w = Words(line);
      REQUIRE_MESSAGE(w.size() >= 3, "bad comment line: " << line);
      const std::string& name = w[2];
      CHECK_MESSAGE(ValidName(name, true), "bad metric name: " << line);
      if (w[1] == "HELP") {
        CHECK_MESSAGE(!e.help.count(name), "second HELP: " << line);
        const std::string prefix = "# HELP " + name + " ";
        REQUIRE_MESSAGE(line.rfind(prefix, 0) == 0, "bad HELP line: " << line);
        e.help[name] = line.substr(prefix.size());
        CHECK_MESSAGE(!e.help[name].empty(), "empty HELP: " << line);
        if (name != current) finished.insert(current);
        CHECK_MESSAGE(!finished.count(name), "metric split in two groups: " << line);
        current = name;
      } else if (w[1] == "TYPE") {
        REQUIRE_MESSAGE(w.size() == 4, "bad TYPE line: " << line);
        CHECK_MESSAGE(!e.type.count(name), "second TYPE: " << line);
        CHECK_MESSAGE(e.help.count(name), "TYPE before HELP: " << line);
        CHECK_MESSAGE(name == current, "TYPE for another metric than its HELP: " << line);
        const std::string& type = w[3];
        CHECK_MESSAGE((type == "counter" || type == "gauge"), "type " << type << ": " << line);
        const bool total = name.size() > 6 && name.compare(name.size() - 6, 6, "_total") == 0;
        CHECK_MESSAGE(total == (type == "counter"),
                      "counters end in _total, gauges do not: " << line);
        e.type[name] = type;
      } else {
        FAIL_CHECK("unexpected comment line: " << line);
      }
      continue;
    }
    Sample s;
    s.line = line;
    size_t at = 0;
    while (at < line.size() && line[at] != '{' && line[at] != ' ')
      ++at;
    s.name = line.substr(0, at);
    CHECK_MESSAGE(ValidName(s.name, true), "bad metric name: " << line);
    CHECK_MESSAGE(s.name == current, "sample outside its metric's HELP/TYPE group: " << line);
    CHECK_MESSAGE(e.help.count(s.name), "sample without HELP: " << line);
    CHECK_MESSAGE(e.type.count(s.name), "sample without TYPE: " << line);
    if (at < line.size() && line[at] == '{') s.labels = ParseLabels(line, at);
    REQUIRE_MESSAGE((at < line.size() && line[at] == ' '), "no value: " << line);
    const std::string value = line.substr(at + 1);
    CHECK_MESSAGE((!value.empty() && value.find_first_not_of("0123456789") == std::string::npos),
                  "value is not a non-negative integer: " << line);
    s.value = value.empty() ? 0 : std::stoull(value);
    std::string key = s.name;
    for (const auto& [k, v] : s.labels)
      key += "|" + k + "=" + v;
    CHECK_MESSAGE(series.insert(key).second, "series twice: " << line);
    e.samples.push_back(std::move(s));
  }
  for (const auto& [name, help] : e.help)
    CHECK_MESSAGE(e.type.count(name), "HELP without TYPE: " << name);
  return e;
}

bool IsIntegrityField(const std::string& field) {
  return kIntegrityKeys.count(field) != 0;
}

// Checks every sample against status --json `s` and that every number of `s` has its sample:
//   dst_aggregator_uptime_seconds                        uptime_seconds (within 2 s)
//   dst_aggregator_loop_clients{loop}                    loop_clients[loop]
//   dst_volume_F[_total]{volume}                         volumes[volume].F, or .integrity.F
//   dst_volume_size_bytes / dst_volume_clean             size / integrity.state == "clean"
//   dst_volume_background_F{volume}                      volumes[volume].background.F
//   dst_member_F[_total]{volume,member,uri}              members[volume, member].F
//   dst_member_state{volume,member,uri,state}            1 for the member's state, else 0
//   dst_member_fenced{volume,member,uri}                 fenced
void CheckMetricsMatchStatus(const Exposition& e, const Json& s) {
  INFO("status --json:\n" << s.text());
  std::set<std::string> covered;  // JSON keys that a sample matched
  for (const Sample& sample : e.samples) {
    INFO("sample: " << sample.line);
    std::string field = sample.name;
    if (field.size() > 6 && field.compare(field.size() - 6, 6, "_total") == 0)
      field.resize(field.size() - 6);
    if (sample.name == "dst_aggregator_uptime_seconds") {
      CHECK(sample.labels.empty());
      const uint64_t json = s.Num("uptime_seconds");
      CHECK(sample.value <= json + 2);
      CHECK(json <= sample.value + 2);
      covered.insert("uptime_seconds");
    } else if (sample.name == "dst_aggregator_loop_clients") {
      REQUIRE(sample.labels.size() == 1);
      REQUIRE(sample.labels.count("loop"));
      const std::string key = "loop_clients." + sample.labels.at("loop");
      CHECK_MESSAGE(sample.value == s.Num(key), key);
      CHECK_MESSAGE(covered.insert(key).second, key << " matched twice");
    } else if (field.rfind("dst_volume_", 0) == 0) {
      field = field.substr(11);
      REQUIRE(sample.labels.size() == 1);
      REQUIRE(sample.labels.count("volume"));
      const size_t v = VolumeIndex(s, sample.labels.at("volume"));
      std::string key;
      uint64_t want = 0;
      if (field == "size_bytes") {
        key = V(v, "size");
        want = s.Num(key);
      } else if (field == "clean") {
        key = V(v, "integrity.state");
        want = s.Str(key) == "clean";
      } else if (field.rfind("background_", 0) == 0) {
        key = V(v, "background." + field.substr(11));
        want = s.Num(key);
      } else {
        key = V(v, IsIntegrityField(field) ? "integrity." + field : field);
        want = s.Num(key);
      }
      CHECK_MESSAGE(sample.value == want, key << " = " << want);
      CHECK_MESSAGE(covered.insert(key).second, key << " matched twice");
    } else if (field.rfind("dst_member_", 0) == 0) {
      field = field.substr(11);
      REQUIRE(sample.labels.count("volume"));
      REQUIRE(sample.labels.count("member"));
      REQUIRE(sample.labels.count("uri"));
      const size_t m =
          MemberIndex(s, sample.labels.at("volume"), std::stoull(sample.labels.at("member")));
      CHECK(sample.labels.at("uri") == s.Str(M(m, "uri")));
      if (field == "state") {
        REQUIRE(sample.labels.size() == 4);
        REQUIRE(sample.labels.count("state"));
        const bool is = sample.labels.at("state") == s.Str(M(m, "state"));
        CHECK(sample.value == (is ? 1u : 0u));
        if (is) CHECK_MESSAGE(covered.insert(M(m, "state")).second, M(m, "state") << " twice");
        continue;
      }
      REQUIRE(sample.labels.size() == 3);
      const std::string key = M(m, field);
      const uint64_t want = field == "fenced" ? s.Bool(key) : s.Num(key);
      CHECK_MESSAGE(sample.value == want, key << " = " << want);
      CHECK_MESSAGE(covered.insert(key).second, key << " matched twice");
    } else {
      FAIL_CHECK("metric not in the dst_aggregator_, dst_volume_ or dst_member_ families");
    }
  }
  // Every number, flag and state of the status has its sample (names, layouts, URIs and the
  // member count and index are in labels or not exported).
  std::set<std::string> want = {"uptime_seconds"};
  for (size_t i = 0; i < s.Size("loop_clients"); ++i)
    want.insert("loop_clients." + std::to_string(i));
  for (size_t v = 0; v < s.Size("volumes"); ++v) {
    for (const std::string& k : kVolumeKeys)
      if (k != "name" && k != "layout" && k != "checksummed" && k != "members")
        want.insert(V(v, k));
    if (s.Bool(V(v, "checksummed")))
      for (const std::string& k : kIntegrityKeys)
        if (k != "checksum") want.insert(V(v, "integrity." + k));
    if (s.Bool(V(v, "checksummed")))
      for (const std::string& k : kBackgroundRates)
        want.insert(V(v, "background." + k));
  }
  for (size_t m = 0; m < s.Size("members"); ++m)
    for (const std::string& k : kMemberKeys)
      if (k != "volume" && k != "index" && k != "uri") want.insert(M(m, k));
  for (const std::string& k : want)
    CHECK_MESSAGE(covered.count(k), "no sample for " << k);
}

// The metrics body with the uptime sample taken out: what must not change while idle.
std::string WithoutUptime(const std::string& metrics) {
  std::string out;
  for (const std::string& line : Lines(metrics))
    if (line.rfind("dst_aggregator_uptime_seconds ", 0) != 0) out += line + "\n";
  return out;
}

std::string FetchMetrics(int port) {
  const HttpAnswer a = Http(port, GetRequest("/metrics"));
  INFO("body:\n" << a.body);
  CHECK(a.status_line == "HTTP/1.1 200 OK");
  REQUIRE(a.headers.count("content-type"));
  CHECK(a.headers.at("content-type").rfind("text/plain; version=0.0.4", 0) == 0);
  return a.body;
}

// ---------------------------------------------------------------------------
// An aggregator started from a config file alone (no option on the command line, so that the
// file's `control` and `metrics` keys are what counts), stopped with SIGTERM on teardown.

class ConfigServed {
 public:
  // `toml(metrics_port)` is the file's content; the port is picked again if another process
  // took it first.
  template <typename Toml>
  ConfigServed(const TempDir& dir, Toml toml) {
    for (int attempt = 1;; ++attempt) {
      port_ = PickFreePort();
      const std::string path = WriteConfig(dir, toml(port_), "served.toml");
      process_.emplace(Argv{DST_AGGREGATOR_PATH, "serve", "--config", path});
      const auto deadline = SteadyClock::now() + 20s;
      while (process_->Running() &&
             process_->stderr_text().find("info: serving ") == std::string::npos &&
             SteadyClock::now() < deadline)
        std::this_thread::sleep_for(5ms);
      if (process_->Running() &&
          process_->stderr_text().find("info: serving ") != std::string::npos)
        return;
      const std::string log = process_->stderr_text();
      const bool port_race = !process_->Running() && Contains(log, "in use") && attempt < 5;
      if (!port_race) {
        Stop();
        throw std::runtime_error("dst-aggregator --config " + path + " did not start:\n" + log);
      }
    }
  }
  ~ConfigServed() { Stop(); }

  int metrics_port() const { return port_; }
  std::string log() const { return process_->stderr_text(); }
  void Kill(int sig) { process_->Kill(sig); }

  int Stop() {
    if (stopped_) return code_;
    stopped_ = true;
    process_->Kill(SIGTERM);
    std::optional<int> code = process_->Wait(10s);
    if (!code) {
      process_->Kill(SIGKILL);
      code = process_->Wait(10s);
    }
    code_ = code.value_or(-1);
    const std::string log = process_->stderr_text();
    CHECK_MESSAGE(code_ == 0, "dst-aggregator exit code " << code_ << "\n" << log);
    CHECK_MESSAGE(SanitizerReportLines(log).empty(), "sanitizer reports:\n" << log);
    return code_;
  }

 private:
  int port_ = 0;
  std::optional<Process> process_;
  bool stopped_ = false;
  int code_ = -1;
};

// Lets `client` do some known traffic on a volume: 3 writes of 64 KiB, 2 reads of 128 KiB, a
// flush and a read past the end (an error), then disconnects.
void KnownTraffic(const std::string& uri) {
  NbdClient client;
  REQUIRE_NBD_OK(client.Connect(uri));
  REQUIRE_NBD_OK(client.SetStrictMode(0));
  const uint64_t size = static_cast<uint64_t>(client.Size());
  const Bytes data = RandomBytes(64 * kKiB, 7);
  for (uint64_t i = 0; i < 3; ++i)
    REQUIRE_NBD_OK(client.Pwrite(data, i * 64 * kKiB));
  Bytes buffer(128 * kKiB);
  REQUIRE_NBD_OK(client.Pread(buffer, 0));
  REQUIRE_NBD_OK(client.Pread(buffer, 128 * kKiB));
  REQUIRE_NBD_OK(client.Flush());
  CHECK_NBD_FAILS(client.Pread(std::span<uint8_t>(buffer).first(4096), size));
  CHECK_NBD_OK(client.Shutdown());
}

constexpr uint64_t kMemberSize = 8 * kMiB;

// A loopback TCP port that listens but never accepts: a member check-config must not connect
// to, or a port some other process holds.
class Trap {
 public:
  Trap() : fd_(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) {
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(fd_.get(), reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
    REQUIRE(::listen(fd_.get(), 16) == 0);
    socklen_t length = sizeof address;
    REQUIRE(::getsockname(fd_.get(), reinterpret_cast<sockaddr*>(&address), &length) == 0);
    port_ = ntohs(address.sin_port);
  }
  int port() const { return port_; }
  std::string uri() const { return "nbd://127.0.0.1:" + std::to_string(port_) + "/x"; }
  // Whether a connection is waiting to be accepted.
  bool Connected() const {
    pollfd p{fd_.get(), POLLIN, 0};
    return ::poll(&p, 1, 0) > 0;
  }

 private:
  Fd fd_;
  int port_ = 0;
};

// ---------------------------------------------------------------------------

TEST_SUITE_BEGIN("aggregator_status");

TEST_CASE("status --json follows a fio run, then a member killed under the volume") {
  Members members(2, kMemberSize);
  Aggregator aggregator(Concat({"--raw", "--layout", "stripe", "--chunk", "64K"}, members.uris()));
  const std::string control = aggregator.control_path();

  const Json idle = StatusJson(control);
  CheckShape(idle);
  REQUIRE(idle.Size("volumes") == 1);
  REQUIRE(idle.Size("members") == 2);
  CHECK(idle.Str(V(0, "name")) == "vol0");
  CHECK(idle.Str(V(0, "layout")) == "stripe");
  CHECK_FALSE(idle.Bool(V(0, "checksummed")));
  CHECK_FALSE(idle.Has(V(0, "integrity")));
  CHECK(idle.Num(V(0, "size")) == 2 * kMemberSize);
  CHECK(idle.Num(V(0, "members")) == 2);
  CHECK(idle.Num(V(0, "clients")) == 0);
  CHECK(idle.Num(V(0, "requests")) == 0);
  for (size_t m = 0; m < 2; ++m) {
    CHECK(idle.Str(M(m, "volume")) == "vol0");
    CHECK(idle.Num(M(m, "index")) == m);
    CHECK(idle.Str(M(m, "uri")) == members.uri(m));
    CHECK(idle.Str(M(m, "state")) == "ready");
    CHECK(idle.Num(M(m, "connections")) >= 1);
    CHECK(idle.Num(M(m, "in_flight")) == 0);
  }

  // fio, time-bounded, in the background; two samples while it runs. Its run is long enough
  // that both samples fall inside it even on a loaded machine: once fio has disconnected, its
  // process may still be running (writing its report), so Running() cannot tell.
  Process fio({kFio, "--name=status", "--ioengine=nbd", "--uri=" + aggregator.uri(), "--rw=randrw",
               "--bs=4k", "--iodepth=8", "--numjobs=1", "--size=" + std::to_string(2 * kMemberSize),
               "--time_based", "--runtime=8", "--output-format=normal"});
  const Json first = WaitForStatus(
      control,
      [](const Json& s) { return s.Num(V(0, "requests")) > 0 && s.Num(V(0, "clients")) == 1; }, 5s,
      "fio's first requests");
  // The second sample once every counter has moved on, however slowly fio
  // runs on a loaded machine (within its 8 s).
  const auto moved_on = [&first](const Json& s) {
    for (const char* field : {"requests", "reads", "writes", "read_bytes", "written_bytes"})
      if (s.Num(V(0, field)) <= first.Num(V(0, field))) return false;
    for (size_t m = 0; m < 2; ++m)
      if (s.Num(M(m, "ios")) <= first.Num(M(m, "ios"))) return false;
    return s.Num(V(0, "clients")) == 1;
  };
  const Json second = WaitForStatus(control, moved_on, 6s, "fio's later requests");
  CheckShape(second);
  {
    INFO("first sample:\n" << first.text() << "\nsecond sample:\n" << second.text());
    CHECK(first.Num(V(0, "clients")) == 1);
    CHECK(second.Num(V(0, "clients")) == 1);
    CHECK(second.Num(V(0, "connections")) >= 1);
    for (const char* field : {"requests", "reads", "writes", "read_bytes", "written_bytes"})
      CHECK_MESSAGE(second.Num(V(0, field)) > first.Num(V(0, field)), field);
    for (size_t m = 0; m < 2; ++m) {
      CHECK(second.Num(M(m, "ios")) > first.Num(M(m, "ios")));
      CHECK(second.Num(M(m, "bytes")) > first.Num(M(m, "bytes")));
    }
    CHECK(second.Num(V(0, "latency_max_us")) >= second.Num(V(0, "latency_avg_us")));
  }

  const std::optional<int> fio_code = fio.Wait(20s);
  INFO("fio stdout:\n" << fio.stdout_text() << "\nfio stderr:\n" << fio.stderr_text());
  REQUIRE(fio_code.has_value());
  CHECK(*fio_code == 0);
  CHECK(Contains(fio.stdout_text(), "err= 0"));

  // Idle again: no client, nothing in flight, the counters add up (fio's I/Os are all 4 KiB).
  const Json after = WaitForStatus(
      control, [](const Json& s) { return s.Num(V(0, "clients")) == 0; }, 5s, "fio to leave");
  {
    INFO("status after fio:\n" << after.text());
    CHECK(after.Num(V(0, "requests_in_flight")) == 0);
    // fio ran for 8 s after the aggregator started.
    CHECK(after.Num("uptime_seconds") >= 8);
    CHECK(after.Num("uptime_seconds") < 120);
    CHECK(after.Num(V(0, "request_errors")) == 0);
    CHECK(after.Num(V(0, "requests")) >= after.Num(V(0, "reads")) + after.Num(V(0, "writes")));
    CHECK(after.Num(V(0, "read_bytes")) == 4096 * after.Num(V(0, "reads")));
    CHECK(after.Num(V(0, "written_bytes")) == 4096 * after.Num(V(0, "writes")));
    CHECK(after.Num(M(0, "bytes")) + after.Num(M(1, "bytes")) ==
          after.Num(V(0, "read_bytes")) + after.Num(V(0, "written_bytes")));
    for (size_t m = 0; m < 2; ++m) {
      CHECK(after.Num(M(m, "in_flight")) == 0);
      CHECK(after.Num(M(m, "failures")) == 0);
      CHECK(after.Str(M(m, "state")) == "ready");
    }
  }

  // Member 1 dies: the aggregator notices, member 0 is unaffected.
  members.member(1).KillHard();
  const Json killed = WaitForStatus(
      control,
      [](const Json& s) {
        const std::string state = s.Str(M(1, "state"));
        return state == "reconnecting" || state == "failed";
      },
      10s, "member 1 to leave the ready state");
  CheckShape(killed);
  CHECK(killed.Str(M(0, "state")) == "ready");
  // The table says the same.
  const std::string table = StatusOk(control, false);
  INFO("status:\n" << table);
  const std::string line1 = LineWithAll(table, {members.uri(1)});
  REQUIRE(!line1.empty());
  const std::vector<std::string> w = Words(line1);
  REQUIRE(w.size() >= 3);
  CHECK((w[2] == "reconnecting" || w[2] == "failed"));
  const std::vector<std::string> w0 = Words(LineWithAll(table, {members.uri(0)}));
  REQUIRE(w0.size() >= 3);
  CHECK(w0[2] == "ready");
}

TEST_CASE("status prints a table with a line per volume and per member") {
  Members members(3, kMemberSize);
  TempDir dir("dst-status-table");
  const std::string config = WriteConfig(
      dir, "[[volume]]\nname = \"alpha\"\nraw = true\nmembers = " + QuotedList({members.uri(0)}) +
               "\n[[volume]]\nname = \"beta\"\nraw = true\nlayout = \"stripe\"\nchunk = \"64K\"\n"
               "members = " +
               QuotedList({members.uri(1), members.uri(2)}) + "\n");
  Aggregator aggregator({"--config", config});
  KnownTraffic(aggregator.uri("beta"));
  const Json s = WaitForStatus(
      aggregator.control_path(),
      [](const Json& j) { return j.Num(V(VolumeIndex(j, "beta"), "clients")) == 0; }, 5s,
      "the client to leave");
  CheckShape(s);
  const std::string table = StatusOk(aggregator.control_path(), false);
  INFO("status:\n" << table << "\nstatus --json:\n" << s.text());
  const std::vector<std::string> lines = Lines(table);
  // uptime, blank, header, 2 volumes, blank, header, 3 members.
  REQUIRE(lines.size() == 10);
  // "uptime N s, clients by event loop: C0 C1 ...", one count per loop, and no client left.
  const std::vector<std::string> uptime = Words(lines[0]);
  REQUIRE(uptime.size() == 7 + s.Size("loop_clients"));
  CHECK(uptime[0] == "uptime");
  CHECK(uptime[2] == "s,");
  CHECK(lines[0].find(" s, clients by event loop:") != std::string::npos);
  for (size_t i = 7; i < uptime.size(); ++i)
    CHECK(uptime[i] == "0");
  CHECK(lines[1].empty());
  CHECK(Words(lines[2]) == std::vector<std::string>{"VOLUME", "LAYOUT", "CHECKSUMS", "SIZE",
                                                    "CLIENTS", "REQUESTS", "READ", "WRITTEN",
                                                    "ERRORS", "AVG_US", "CKSUM_ERR"});
  const std::vector<std::string> alpha = Words(lines[3]);
  const std::vector<std::string> beta = Words(lines[4]);
  REQUIRE(alpha.size() == 14);  // the three sizes are "N UNIT"
  REQUIRE(beta.size() == 14);
  CHECK(alpha[0] == "alpha");
  CHECK(alpha[1] == "linear");
  CHECK(alpha[2] == "raw");
  CHECK(alpha[3] + " " + alpha[4] == TableSize(kMemberSize));
  CHECK(alpha[6] == "0");
  CHECK(alpha[13] == "-");
  CHECK(beta[0] == "beta");
  CHECK(beta[1] == "stripe");
  CHECK(beta[2] == "raw");
  CHECK(beta[3] + " " + beta[4] == TableSize(2 * kMemberSize));
  CHECK(beta[5] == "0");                                     // clients
  CHECK(beta[6] == "7");                                     // requests
  CHECK(beta[7] + " " + beta[8] == TableSize(256 * kKiB));   // read
  CHECK(beta[9] + " " + beta[10] == TableSize(192 * kKiB));  // written
  CHECK(beta[11] == "1");                                    // errors
  CHECK(beta[12] == std::to_string(s.Num(V(VolumeIndex(s, "beta"), "latency_avg_us"))));  // AVG_US
  CHECK(beta[13] == "-");
  CHECK(lines[5].empty());
  const std::vector<std::string> header = Words(lines[6]);
  REQUIRE(header.size() >= 3);
  CHECK(header[0] == "VOLUME");
  CHECK(header[1] == "#");
  CHECK(header[2] == "STATE");
  CHECK(header.back() == "URI");
  const std::vector<std::pair<std::string, size_t>> want = {{"alpha", 0}, {"beta", 0}, {"beta", 1}};
  for (size_t i = 0; i < 3; ++i) {
    const std::vector<std::string> w = Words(lines[7 + i]);
    REQUIRE(w.size() == header.size());
    const size_t m = MemberIndex(s, want[i].first, want[i].second);
    CHECK(w[0] == want[i].first);
    CHECK(w[1] == std::to_string(want[i].second));
    CHECK(w[2] == "ready");
    CHECK(w[3] == (s.Bool(M(m, "fenced")) ? "yes" : "no"));
    CHECK(w.back() == members.uri(i));
  }
  // The JSON agrees on the known traffic.
  const size_t b = VolumeIndex(s, "beta");
  CHECK(s.Num(V(b, "connections")) == 1);
  CHECK(s.Num(V(b, "requests")) == 7);
  CHECK(s.Num(V(b, "reads")) == 2);
  CHECK(s.Num(V(b, "writes")) == 3);
  CHECK(s.Num(V(b, "read_bytes")) == 256 * kKiB);
  CHECK(s.Num(V(b, "written_bytes")) == 192 * kKiB);
  CHECK(s.Num(V(b, "request_errors")) == 1);
  CHECK(s.Num(V(VolumeIndex(s, "alpha"), "requests")) == 0);
}

TEST_CASE("metrics match status --json, from a config file with control and metrics keys") {
  Members raw(2, kMemberSize);
  Members safe(2, 4 * kMiB);
  {
    const CommandResult r = RunAggregator(Concat({"create", "--name", "safe"}, safe.uris()));
    INFO("create stdout:\n" << r.stdout_text << "stderr:\n" << r.stderr_text);
    REQUIRE(r.exit_code == 0);
  }
  TempDir dir("dst-status-metrics");
  const std::string socket = dir.File("agg.sock");
  const std::string control = dir.File("ctl.sock");
  ConfigServed served(dir, [&](int port) {
    return "unix = [" + Quoted(socket) + "]\ncontrol = " + Quoted(control) +
           "\nmetrics = \"127.0.0.1:" + std::to_string(port) +
           "\"\nkeepalive = 0\n"  // no pings: idle counters stay still
           "[[volume]]\nname = \"plain\"\nraw = true\nlayout = \"stripe\"\nmembers = " +
           QuotedList(raw.uris()) +
           "\n[[volume]]\nname = \"safe\"\nmembers = " + QuotedList(safe.uris()) + "\n";
  });
  const int port = served.metrics_port();
  CHECK(Contains(served.log(), "control socket " + control));
  CHECK(Contains(served.log(), "metrics on http://127.0.0.1:" + std::to_string(port) + "/metrics"));
  KnownTraffic("nbd+unix:///plain?socket=" + socket);
  KnownTraffic("nbd+unix:///safe?socket=" + socket);
  WaitForStatus(
      control,
      [](const Json& s) { return s.Num(V(0, "clients")) == 0 && s.Num(V(1, "clients")) == 0; }, 5s,
      "the clients to leave");

  // Metrics, status --json, metrics again: when both metrics agree, nothing moved in between
  // (the checksummed volume's cleaner may write back at any time).
  std::optional<Json> status;
  std::string metrics;
  for (int attempt = 0; attempt < 10 && !status; ++attempt) {
    if (attempt > 0) std::this_thread::sleep_for(200ms);
    const std::string before = FetchMetrics(port);
    Json s = StatusJson(control);
    metrics = FetchMetrics(port);
    if (WithoutUptime(before) == WithoutUptime(metrics)) status.emplace(std::move(s));
  }
  REQUIRE_MESSAGE(status.has_value(), "the metrics never held still; last:\n" << metrics);
  CheckShape(*status);
  const Exposition e = ParseExposition(metrics);
  CheckMetricsMatchStatus(e, *status);

  // The names the documentation promises, with their types.
  INFO("metrics:\n" << metrics);
  CHECK(e.type.count("dst_volume_requests_total"));
  CHECK(e.type.count("dst_member_resends_total"));
  CHECK(e.type.count("dst_member_state"));
  CHECK(e.type.count("dst_volume_clients"));
  if (e.type.count("dst_volume_requests_total"))
    CHECK(e.type.at("dst_volume_requests_total") == "counter");
  if (e.type.count("dst_volume_clients")) CHECK(e.type.at("dst_volume_clients") == "gauge");
  CHECK(Contains(metrics, "dst_volume_requests_total{volume=\"plain\"} 7\n"));
  CHECK(Contains(metrics, "dst_member_resends_total{volume=\"plain\",member=\"0\",uri=\"" +
                              raw.uri(0) + "\"} 0\n"));
  CHECK(Contains(metrics, "dst_member_state{volume=\"plain\",member=\"1\",uri=\"" + raw.uri(1) +
                              "\",state=\"ready\"} 1\n"));
  CHECK(Contains(metrics, "dst_member_state{volume=\"plain\",member=\"1\",uri=\"" + raw.uri(1) +
                              "\",state=\"failed\"} 0\n"));
  const size_t plain = VolumeIndex(*status, "plain");
  CHECK(status->Num(V(plain, "read_bytes")) == 256 * kKiB);
  CHECK(status->Num(V(plain, "written_bytes")) == 192 * kKiB);
  CHECK(status->Num(V(plain, "request_errors")) == 1);
  // A raw volume's member bytes are exactly its clients' bytes.
  CHECK(status->Num(M(MemberIndex(*status, "plain", 0), "bytes")) +
            status->Num(M(MemberIndex(*status, "plain", 1), "bytes")) ==
        256 * kKiB + 192 * kKiB);
  const size_t safe_index = VolumeIndex(*status, "safe");
  CHECK(status->Num(V(safe_index, "requests")) == 7);
  CHECK(Contains(metrics, "dst_volume_clean{volume=\"safe\"} 0\n"));

  // Anything but GET /metrics.
  {
    const HttpAnswer a = Http(port, GetRequest("/other"));
    CHECK(a.status_line == "HTTP/1.1 404 Not Found");
  }
  {
    const HttpAnswer a = Http(port, GetRequest("/metrics/x"));
    CHECK(a.status_line == "HTTP/1.1 404 Not Found");
  }
  {
    const HttpAnswer a = Http(port,
                              "POST /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                              "Content-Length: 0\r\n\r\n");
    CHECK(a.status_line == "HTTP/1.1 405 Method Not Allowed");
  }
  {
    const HttpAnswer a = Http(port, GetRequest("/metrics?x=1"));
    CHECK(a.status_line == "HTTP/1.1 200 OK");
  }
  // Stopped: both sockets are gone.
  CHECK(served.Stop() == 0);
  struct stat st {};
  CHECK(::stat(control.c_str(), &st) != 0);
  CHECK(errno == ENOENT);
}

TEST_CASE("the control socket: mode, protocol, a silent client, stale and busy paths, removal") {
  Members members(2, kMemberSize);
  TempDir dir("dst-status-control");
  // A stale socket from a process that is gone: bound, never listened on, left behind.
  const std::string control = dir.File("ctl.sock");
  {
    Fd stale(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::memcpy(address.sun_path, control.c_str(), control.size() + 1);
    REQUIRE(::bind(stale.get(), reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
  }
  struct stat st {};
  REQUIRE(::stat(control.c_str(), &st) == 0);
  std::optional<Aggregator> aggregator;
  aggregator.emplace(std::vector<std::string>{"--raw", "--control", control, members.uri(0)});

  REQUIRE(::stat(control.c_str(), &st) == 0);
  CHECK(S_ISSOCK(st.st_mode));
  CHECK((st.st_mode & 07777) == 0600);
  CHECK(st.st_uid == ::geteuid());

  SUBCASE("raw protocol") {
    const std::string text = ControlRequest(control, "status\n");
    CHECK(text.rfind("uptime ", 0) == 0);
    CHECK(Contains(text, members.uri(0)));
    const Json json(ControlRequest(control, "status json\n"));
    CheckShape(json);
    CHECK(json.Str(M(0, "uri")) == members.uri(0));
    // A line ending of CRLF (telnet, nc -C) is the same command.
    CHECK(Json(ControlRequest(control, "status json\r\n")).Size("members") == 1);
    for (const std::string request : {"hello\n", "status xml\n", "\n", "STATUS\n"}) {
      const std::string answer = ControlRequest(control, request);
      INFO("request " << request << "answer " << answer);
      CHECK(answer.rfind("error: unknown command", 0) == 0);
      CHECK(CountOf(answer, "\n") == 1);
      CHECK(answer.back() == '\n');
    }
    // More than a command's worth of bytes without a newline: dropped, no answer.
    CHECK(ControlRequest(control, std::string(4096, 'x')).empty());
    // A client that closes its side without a newline gets no answer either.
    {
      Fd fd(ConnectUnix(control));
      SendAll(fd.get(), "status");
      ::shutdown(fd.get(), SHUT_WR);
      CHECK(ReadToEof(fd.get()).empty());
    }
  }

  SUBCASE("a silent client does not hold up others") {
    Fd silent(ConnectUnix(control));
    Fd half(ConnectUnix(control));
    SendAll(half.get(), "stat");  // half a command, then nothing
    const auto start = SteadyClock::now();
    const Json s = StatusJson(control);
    const auto took = SteadyClock::now() - start;
    CHECK(s.Size("members") == 1);
    // Well before the 5 s the server gives a client: status did not wait for them.
    CHECK(took < 3s);
    // They are still connected (not answered, not dropped yet).
    pollfd p[2] = {{silent.get(), POLLIN, 0}, {half.get(), POLLIN, 0}};
    CHECK(::poll(p, 2, 0) == 0);
    CHECK(ControlRequest(control, "status\n").rfind("uptime ", 0) == 0);
    // SIGTERM with them still connected: the aggregator stops at once (exit 0, checked by
    // Aggregator's destructor), without waiting for them.
    const auto stop = SteadyClock::now();
    aggregator.reset();
    CHECK(SteadyClock::now() - stop < 4s);
  }

  SUBCASE("a second aggregator on the same path is refused and leaves it alone") {
    Members other(1, kMemberSize);
    AggregatorOptions o = ServeOptions({"--raw", "--control", control, other.uri(0)});
    o.start_timeout = 20s;
    const StartFailure f = AggregatorServer::StartExpectingFailure(std::move(o));
    INFO("stderr:\n" << f.stderr_text);
    CHECK(f.exit_code == 1);
    const std::vector<std::string> lines = Lines(f.stderr_text);
    REQUIRE(!lines.empty());
    CHECK(lines.back() ==
          "dst-aggregator: error: control socket " + control + " is in use by another process");
    CHECK(CountOf(f.stderr_text, "error:") == 1);
    CHECK(SanitizerReportLines(f.stderr_text).empty());
    // The first one still answers there.
    CHECK(StatusJson(control).Str(M(0, "uri")) == members.uri(0));
  }

  // SIGTERM: exit 0 and the socket is gone; status then says nobody is there.
  aggregator.reset();
  CHECK(::stat(control.c_str(), &st) != 0);
  CHECK(errno == ENOENT);
  const CommandResult r = RunAggregator({"status", "--control", control});
  INFO("stdout:\n" << r.stdout_text << "stderr:\n" << r.stderr_text);
  CHECK(r.exit_code == 1);
  CHECK(r.stdout_text.empty());
  CHECK(r.stderr_text == "dst-aggregator: error: control socket " + control +
                             " (is the aggregator running? see --control): No such file or "
                             "directory\n");
}

// The control socket is bound after the NBD listeners, so a second aggregator refused for a busy
// control socket has already bound its --unix path by then. Given the first one's path (a second
// instance started by mistake), it must not take that path away from the first.
TEST_CASE("a second aggregator refused for a busy control socket leaves the first one's socket") {
  Members members(1, kMemberSize);
  Members other(1, kMemberSize);
  Aggregator first({"--raw", members.uri(0)});
  AggregatorOptions o = ServeOptions(
      {"--unix", first.socket_path(), "--control", first.control_path(), "--raw", other.uri(0)});
  o.listen = AggregatorListen::kFromArgs;
  const StartFailure f = AggregatorServer::StartExpectingFailure(std::move(o));
  INFO("second aggregator's stderr:\n" << f.stderr_text);
  CHECK(f.exit_code == 1);
  CHECK(Contains(f.stderr_text, "dst-aggregator: error: control socket " + first.control_path() +
                                    " is in use by another process\n"));
  // The first aggregator still answers status, and still serves its volume at its path.
  CHECK(StatusJson(first.control_path()).Str(M(0, "state")) == "ready");
  NbdClient client;
  CHECK_NBD_OK(client.Connect(first.uri()));
}

// A start-up that fails after the listeners and the control socket are up (here: the metrics port
// is taken) exits 1 with the error as its last line and leaves no socket file behind.
TEST_CASE("a busy metrics port fails start-up and leaves no socket behind") {
  Members members(1, kMemberSize);
  Trap busy;
  TempDir dir("dst-status-busy");
  const std::string socket = dir.File("agg.sock");
  const std::string control = dir.File("ctl.sock");
  const std::string metrics = "127.0.0.1:" + std::to_string(busy.port());
  AggregatorOptions o = ServeOptions(
      {"--unix", socket, "--control", control, "--metrics", metrics, "--raw", members.uri(0)});
  o.listen = AggregatorListen::kFromArgs;
  const StartFailure f = AggregatorServer::StartExpectingFailure(std::move(o));
  INFO("stderr:\n" << f.stderr_text);
  CHECK(f.exit_code == 1);
  const std::vector<std::string> lines = Lines(f.stderr_text);
  REQUIRE(!lines.empty());
  CHECK(lines.back() ==
        "dst-aggregator: error: --metrics: listen on " + metrics + ": Address already in use");
  CHECK(CountOf(f.stderr_text, "error:") == 1);
  CHECK(SanitizerReportLines(f.stderr_text).empty());
  struct stat st {};
  CHECK_MESSAGE(::stat(control.c_str(), &st) != 0, "control socket left behind: " << control);
  CHECK_MESSAGE(::stat(socket.c_str(), &st) != 0, "NBD socket left behind: " << socket);
}

TEST_CASE("status without an aggregator: one error line, exit 1") {
  TempDir dir("dst-status-none");
  const std::string path = dir.File("nobody.sock");
  for (const bool json : {false, true}) {
    std::vector<std::string> args = {"status", "--control", path};
    if (json) args.push_back("--json");
    const CommandResult r = RunAggregator(args);
    INFO("stdout:\n" << r.stdout_text << "stderr:\n" << r.stderr_text);
    CHECK(r.exit_code == 1);
    CHECK(r.stdout_text.empty());
    CHECK(r.stderr_text == "dst-aggregator: error: control socket " + path +
                               " (is the aggregator running? see --control): No such file or "
                               "directory\n");
  }
  // A path that exists but where nobody listens.
  const std::string file = dir.File("plain-file");
  WriteFile(file, Bytes(1, 0));
  const CommandResult r = RunAggregator({"status", "--control", file});
  INFO("stderr:\n" << r.stderr_text);
  CHECK(r.exit_code == 1);
  CHECK(CountOf(r.stderr_text, "\n") == 1);
  CHECK(r.stderr_text.rfind("dst-aggregator: error: control socket " + file +
                                " (is the aggregator running? see --control): ",
                            0) == 0);
}

TEST_CASE("serve --check-config validates without connecting") {
  TempDir dir("dst-status-check");
  Trap trap;
  const std::string absent = "nbd+unix:///x?socket=/nonexistent";
  const std::string key = dir.File("safe.key");
  WriteKeyFile(key, RandomBytes(32, 1));
  const std::string short_key = dir.File("short.key");
  WriteKeyFile(short_key, RandomBytes(5, 2));
  const std::string socket = dir.File("agg.sock");
  const std::string control = dir.File("ctl.sock");

  // exit code 0, the message on stdout and nothing else, and nothing was connected or bound.
  auto check_ok = [&](const std::vector<std::string>& args, size_t volumes) {
    const auto start = SteadyClock::now();
    const CommandResult r = RunAggregator(Concat({"serve", "--check-config"}, args));
    INFO("serve --check-config " << JoinArgv(args) << "\nstdout:\n"
                                 << r.stdout_text << "stderr:\n"
                                 << r.stderr_text);
    CHECK(r.exit_code == 0);
    CHECK(r.stdout_text == "configuration OK: " + std::to_string(volumes) + " volume(s)\n");
    CHECK(r.stderr_text.empty());
    CHECK(SteadyClock::now() - start < 10s);
    CHECK_FALSE(trap.Connected());
    struct stat st {};
    CHECK(::stat(socket.c_str(), &st) != 0);
    CHECK(::stat(control.c_str(), &st) != 0);
  };
  // exit code 1 and exactly one line on stderr, this error.
  auto check_refused = [&](const std::vector<std::string>& args, const std::string& error) {
    const CommandResult r = RunAggregator(Concat({"serve", "--check-config"}, args));
    INFO("serve --check-config " << JoinArgv(args) << "\nstdout:\n"
                                 << r.stdout_text << "stderr:\n"
                                 << r.stderr_text);
    CHECK(r.exit_code == 1);
    CHECK(r.stdout_text.empty());
    CHECK(r.stderr_text == "dst-aggregator: error: " + error + "\n");
    CHECK_FALSE(trap.Connected());
  };
  auto file_refused = [&](const std::string& toml, const std::string& error) {
    const std::string path = WriteConfig(dir, toml, "bad.toml");
    INFO("bad.toml:\n" << toml);
    check_refused({"--config", path}, path + ":" + error);
  };

  SUBCASE("a good file, with members that do not exist or never answer") {
    const std::string path = WriteConfig(
        dir, "listen = [\"127.0.0.1:0\"]\nunix = [" + Quoted(socket) +
                 "]\ncontrol = " + Quoted(control) +
                 "\nmetrics = \"127.0.0.1:9100\"\ndefault = \"plain\"\nio-timeout = \"2s\"\n"
                 "retry-window = \"1m\"\nkeepalive = \"500ms\"\nstats-interval = 0\n"
                 "table-cache = \"1M\"\nfencing = \"off\"\nconnections = 4\n"
                 "[[volume]]\nname = \"plain\"\nraw = true\nlayout = \"stripe\"\n"
                 "chunk = \"128K\"\nmembers = " +
                 QuotedList({absent, trap.uri()}) +
                 "\n[[volume]]\nname = \"safe\"\nkey-file = " + Quoted(key) +
                 "\nmembers = " + QuotedList({trap.uri(), "nbd://127.0.0.1:1/y"}) + "\n");
    check_ok({"--config", path}, 2);
  }
  SUBCASE("good command lines") {
    check_ok({"--raw", "--layout", "stripe", absent, trap.uri()}, 1);
    check_ok({"--unix", socket, "--control", control, "--metrics", "127.0.0.1:9100", trap.uri()},
             1);
    check_ok({"--key-file", key, "--name", "safe", "--table-cache", "1M", trap.uri()}, 1);
  }
  SUBCASE("a listen address without a port") {
    file_refused(
        "listen = [\"nowhere\"]\n[[volume]]\nraw = true\nmembers = [" + Quoted(absent) + "]\n",
        "1: listen nowhere: expected HOST:PORT");
  }
  SUBCASE("a key file that does not exist") {
    file_refused("[[volume]]\nmembers = [" + Quoted(absent) + "]\nkey-file = \"/nonexistent\"\n",
                 "3: key-file: --key-file /nonexistent: No such file or directory");
  }
  SUBCASE("a key file too short") {
    file_refused(
        "[[volume]]\nmembers = [" + Quoted(absent) + "]\nkey-file = " + Quoted(short_key) + "\n",
        "3: key-file: --key-file " + short_key +
            " holds 5 bytes: a checksum key is 16 to 64 bytes (e.g. (umask 077; head -c 32 "
            "/dev/urandom > FILE))");
  }
  SUBCASE("an unknown key in a volume") {
    file_refused("[[volume]]\nmembers = [" + Quoted(absent) + "]\ncolour = \"blue\"\n",
                 "3: unknown key 'colour' in [[volume]]");
  }
  SUBCASE("an unknown top-level key") {
    file_refused("colour = \"blue\"\n[[volume]]\nmembers = [" + Quoted(absent) + "]\n",
                 "1: unknown key 'colour'");
  }
  SUBCASE("bad durations") {
    file_refused("io-timeout = \"5x\"\n[[volume]]\nmembers = [" + Quoted(absent) + "]\n",
                 "1: io-timeout: expected a duration such as 5, 500ms or 2m");
    file_refused(
        "raw = true\nretry-window = \"soon\"\n[[volume]]\nmembers = [" + Quoted(absent) + "]\n",
        "2: retry-window: expected a duration such as 5, 500ms or 2m");
    file_refused("keepalive = -1\n[[volume]]\nmembers = [" + Quoted(absent) + "]\n",
                 "1: keepalive: expected a duration such as 5, 500ms or 2m");
    check_refused({"--raw", "--io-timeout", "5x", absent},
                  "--io-timeout 5x: expected a duration such as 5, 500ms or 2m");
    check_refused({"--raw", "--io-timeout", "0", absent}, "io-timeout must be more than 0");
  }
  SUBCASE("bad addresses on the command line") {
    check_refused({"--raw", "--listen", "nowhere", absent}, "--listen nowhere: expected HOST:PORT");
    check_refused({"--raw", "--listen", "127.0.0.1:99999", absent},
                  "--listen 127.0.0.1:99999: bad port '99999'");
    check_refused({"--raw", "--unix", "", absent},
                  "unix socket '': empty or longer than 107 bytes");
  }
  SUBCASE("a metrics address without a port") {
    const std::string toml =
        "metrics = \"nowhere\"\n[[volume]]\nraw = true\nmembers = [" + Quoted(absent) + "]\n";
    const std::string path = WriteConfig(dir, toml, "bad.toml");
    const CommandResult r = RunAggregator({"serve", "--check-config", "--config", path});
    INFO("stderr:\n" << r.stderr_text);
    CHECK(r.exit_code == 1);
    CHECK(CountOf(r.stderr_text, "\n") == 1);
    CHECK(r.stderr_text == "dst-aggregator: error: " + path + ":1: metrics: expected HOST:PORT\n");
    const CommandResult c =
        RunAggregator({"serve", "--check-config", "--metrics", "nowhere", "--raw", absent});
    INFO("stderr:\n" << c.stderr_text);
    CHECK(c.exit_code == 1);
    CHECK(CountOf(c.stderr_text, "\n") == 1);
    CHECK(c.stderr_text == "dst-aggregator: error: --metrics nowhere: expected HOST:PORT\n");
  }
  // Checks of the whole configuration, after the file has been read: they name the volume or
  // the key, not a line.
  auto whole_refused = [&](const std::string& toml, const std::string& error) {
    const std::string path = WriteConfig(dir, toml, "bad.toml");
    INFO("bad.toml:\n" << toml);
    check_refused({"--config", path}, error);
  };
  SUBCASE("duplicate volume names") {
    whole_refused("raw = true\n[[volume]]\nname = \"a\"\nmembers = [" + Quoted(absent) +
                      "]\n[[volume]]\nname = \"a\"\nmembers = [" + Quoted(trap.uri()) + "]\n",
                  "duplicate volume name 'a'");
  }
  SUBCASE("layout on an assembled volume") {
    whole_refused(
        "[[volume]]\nname = \"a\"\nlayout = \"stripe\"\nmembers = [" + Quoted(absent) + "]\n",
        "volume a: layout and chunk are recorded in the members' superblocks; they "
        "apply to raw volumes only (--raw)");
    whole_refused(
        "[[volume]]\nname = \"a\"\nchunk = \"128K\"\nmembers = [" + Quoted(absent) + "]\n",
        "volume a: layout and chunk are recorded in the members' superblocks; they "
        "apply to raw volumes only (--raw)");
    check_refused({"--layout", "stripe", absent},
                  "a volume: layout and chunk are recorded in the members' superblocks; they "
                  "apply to raw volumes only (--raw)");
  }
  SUBCASE("a table cache below 1M") {
    whole_refused("table-cache = \"512K\"\n[[volume]]\nmembers = [" + Quoted(absent) + "]\n",
                  "table-cache must be at least 1M");
    check_refused({"--table-cache", "512K", absent}, "table-cache must be at least 1M");
  }
  SUBCASE("other whole-configuration errors") {
    whole_refused("default = \"zzz\"\nraw = true\n[[volume]]\nname = \"a\"\nmembers = [" +
                      Quoted(absent) + "]\n",
                  "default volume 'zzz' is not defined");
    whole_refused("[[volume]]\nname = \"a\"\nraw = true\nkey-file = " + Quoted(key) +
                      "\nmembers = [" + Quoted(absent) + "]\n",
                  "volume a: a checksum key is for assembled volumes, not raw ones");
    whole_refused("[[volume]]\nname = \"a\"\nraw = true\nmembers = [\"http://x/y\"]\n",
                  "member http://x/y: not an NBD URI (nbd://HOST[:PORT]/NAME, "
                  "nbd+unix:///NAME?socket=PATH, or nbds:// and nbds+unix:// for TLS)");
    whole_refused("[[volume]]\nname = \"a\"\nraw = true\n", "volume a: no members");
    const std::string long_path = "/tmp/" + std::string(110, 'c') + ".sock";
    whole_refused(
        "control = " + Quoted(long_path) + "\n[[volume]]\nmembers = [" + Quoted(absent) + "]\n",
        "control socket '" + long_path + "': longer than 107 bytes");
  }
  SUBCASE("a file that is not TOML") {
    const std::string path = WriteConfig(dir, "raw = true\nlisten = [\n", "bad.toml");
    const CommandResult r = RunAggregator({"serve", "--check-config", "--config", path});
    INFO("stderr:\n" << r.stderr_text);
    CHECK(r.exit_code == 1);
    CHECK(CountOf(r.stderr_text, "\n") == 1);
    CHECK(r.stderr_text.rfind("dst-aggregator: error: " + path + ":", 0) == 0);
  }
}

TEST_CASE("a checksummed volume shows its integrity") {
  Members members(2, 4 * kMiB);
  {
    const CommandResult r = RunAggregator(Concat({"create", "--name", "safe"}, members.uris()));
    INFO("create stdout:\n" << r.stdout_text << "stderr:\n" << r.stderr_text);
    REQUIRE(r.exit_code == 0);
  }
  std::optional<Aggregator> aggregator;
  aggregator.emplace(members.uris());
  const std::string control = aggregator->control_path();
  KnownTraffic(aggregator->uri("safe"));
  const Json s = WaitForStatus(
      control, [](const Json& j) { return j.Num(V(0, "clients")) == 0; }, 5s,
      "the client to leave");
  CheckShape(s);
  REQUIRE(s.Size("volumes") == 1);
  CHECK(s.Str(V(0, "name")) == "safe");
  CHECK(s.Bool(V(0, "checksummed")));
  CHECK(s.Str(V(0, "layout")) == "linear");
  CHECK(s.Num(V(0, "members")) == 2);
  CHECK(s.Num(V(0, "requests")) == 7);
  CHECK(s.Num(V(0, "request_errors")) == 1);
  REQUIRE(s.Has(V(0, "integrity")));
  CHECK(s.Str(V(0, "integrity.state")) == "dirty");
  CHECK(s.Str(V(0, "integrity.checksum")) == "crc32c");
  CHECK(s.Num(V(0, "integrity.checksum_errors")) == 0);
  CHECK(s.Num(V(0, "integrity.rereads_recovered")) == 0);
  CHECK(s.Num(V(0, "integrity.recomputed_regions")) == 0);
  // Whole 4 KiB blocks were written: no read-modify-write.
  CHECK(s.Num(V(0, "integrity.rmw_blocks")) == 0);
  {
    NbdClient client;
    REQUIRE_NBD_OK(client.Connect(aggregator->uri("safe")));
    CHECK(s.Num(V(0, "size")) == static_cast<uint64_t>(client.Size()));
    CHECK_NBD_OK(client.Shutdown());
  }
  for (size_t m = 0; m < 2; ++m) {
    CHECK(s.Str(M(m, "volume")) == "safe");
    CHECK(s.Num(M(m, "index")) == m);
    CHECK(s.Str(M(m, "state")) == "ready");
  }
  // A corrupted block on member 1 is counted for the volume and for that
  // member. Linear over two 4 MiB members: member 1's data area (at 1 MiB in
  // its file) starts at volume offset 3 MiB.
  {
    NbdClient client;
    REQUIRE_NBD_OK(client.Connect(aggregator->uri("safe")));
    REQUIRE_NBD_OK(client.Pwrite(Bytes(4096, 0x5a), 3 * kMiB));
    REQUIRE_NBD_OK(client.Flush());
    WriteFileAt(members.file(1), kMiB + 100, Bytes(1, 0xa5));
    Bytes back(4096);
    CHECK(client.Pread(back, 3 * kMiB).err == EIO);
    CHECK_NBD_OK(client.Shutdown());
  }
  const Json after = WaitForStatus(
      control, [](const Json& j) { return j.Num(V(0, "clients")) == 0; }, 5s,
      "the client to leave");
  CHECK(after.Num(V(0, "integrity.checksum_errors")) == 1);
  CHECK(after.Num(M(0, "checksum_errors")) == 0);
  CHECK(after.Num(M(1, "checksum_errors")) == 1);
  const std::string table = StatusOk(control, false);
  INFO("status:\n" << table);
  const std::vector<std::string> line = Words(LineWithAll(table, {"safe ", "linear"}));
  REQUIRE(line.size() == 14);
  CHECK(line[0] == "safe");
  CHECK(line[2] == "crc32c/dirty");
  CHECK(line[13] == "1");
  // Stopped: the volume is marked clean.
  const int code = aggregator->Stop();
  CHECK(code == 0);
  CHECK(Contains(aggregator->stderr_text(), "volume safe: stopped clean"));
  aggregator.reset();
}

// ---------------------------------------------------------------------------
// One list of counters, and the control socket's place.

// The "name=value" fields of the last stats line with `mark` in `log`.
std::map<std::string, std::string> LastStatsLine(const std::string& log, const std::string& mark) {
  const size_t at = log.rfind(mark);
  REQUIRE_MESSAGE(at != std::string::npos, "no '" << mark << "' in:\n" << log);
  const size_t end = log.find('\n', at);
  REQUIRE(end != std::string::npos);
  std::map<std::string, std::string> out;
  for (const std::string& word : Words(log.substr(at + mark.size(), end - at - mark.size()))) {
    const size_t eq = word.find('=');
    REQUIRE_MESSAGE(eq != std::string::npos, "not name=value: " << word);
    CHECK_MESSAGE(out.emplace(word.substr(0, eq), word.substr(eq + 1)).second, word << " twice");
  }
  return out;
}

// SIGUSR1, then the log once the line with `last_mark` (logged last) has appeared once more.
std::string LogAfterStatsSignal(ConfigServed& served, const std::string& last_mark) {
  const size_t before = CountOf(served.log(), last_mark);
  served.Kill(SIGUSR1);
  const auto deadline = SteadyClock::now() + 5s;
  for (;;) {
    const std::string log = served.log();
    const size_t at = log.rfind(last_mark);
    if (CountOf(log, last_mark) > before && log.find('\n', at) != std::string::npos) return log;
    if (SteadyClock::now() > deadline)
      throw std::runtime_error("no new '" + last_mark + "' line after SIGUSR1:\n" + log);
    std::this_thread::sleep_for(10ms);
  }
}

// The issue: status --json lacked bitmap_syncs, table_loads, table_writebacks, table_evictions
// and table_errors, which the SIGUSR1 line and integrity.md have, and called table_dirty
// table_dirty_pages; the stats line called in_flight inflight. Now every output prints one list.
TEST_CASE("status, the status table, metrics and the stats lines show one list of counters") {
  Members safe(2, 4 * kMiB);
  {
    const CommandResult r = RunAggregator(Concat({"create", "--name", "safe"}, safe.uris()));
    INFO("create stdout:\n" << r.stdout_text << "stderr:\n" << r.stderr_text);
    REQUIRE(r.exit_code == 0);
  }
  TempDir dir("dst-status-counters");
  const std::string socket = dir.File("agg.sock");
  const std::string control = dir.File("ctl.sock");
  ConfigServed served(dir, [&](int port) {
    return "unix = [" + Quoted(socket) + "]\ncontrol = " + Quoted(control) +
           "\nmetrics = \"127.0.0.1:" + std::to_string(port) +
           "\"\nkeepalive = 0\n[[volume]]\nname = \"safe\"\nmembers = " + QuotedList(safe.uris()) +
           "\n";
  });
  KnownTraffic("nbd+unix:///safe?socket=" + socket);
  WaitForStatus(
      control, [](const Json& s) { return s.Num(V(0, "clients")) == 0; }, 5s,
      "the client to leave");

  const std::string integrity_mark = "info: stats: volume safe integrity: ";
  // Metrics, status --json, the table, the stats lines, metrics again: when both metrics agree,
  // nothing moved in between (the cleaner may write back at any time).
  std::optional<Json> status;
  std::string table, log, metrics;
  for (int attempt = 0; attempt < 10 && !status; ++attempt) {
    if (attempt > 0) std::this_thread::sleep_for(200ms);
    const std::string before = FetchMetrics(served.metrics_port());
    Json s = StatusJson(control);
    table = StatusOk(control, false);
    log = LogAfterStatsSignal(served, integrity_mark);
    metrics = FetchMetrics(served.metrics_port());
    if (WithoutUptime(before) == WithoutUptime(metrics)) status.emplace(std::move(s));
  }
  REQUIRE_MESSAGE(status.has_value(), "the counters never held still; last metrics:\n" << metrics);
  const Json& s = *status;
  CheckShape(s);
  CheckMetricsMatchStatus(ParseExposition(metrics), s);
  INFO("status --json:\n" << s.text() << "\nstatus:\n" << table);

  // The volume's integrity: the stats line has exactly the JSON's keys, with the same values,
  // and the table's integrity line is the stats line's fields.
  const auto line = LastStatsLine(log, integrity_mark);
  std::set<std::string> line_keys;
  for (const auto& [key, value] : line) {
    line_keys.insert(key);
    const std::string json_key = V(0, "integrity." + key);
    const std::string want =
        key == "state" || key == "checksum" ? s.Str(json_key) : std::to_string(s.Num(json_key));
    CHECK_MESSAGE(value == want, key);
  }
  CHECK(line_keys == kIntegrityKeys);
  const std::string table_line = LineWithAll(table, {"safe ", "state=", "table_dirty="});
  const std::string fields = log.substr(log.rfind(integrity_mark) + integrity_mark.size());
  CHECK(Words(table_line) == Concat({"safe"}, Words(fields.substr(0, fields.find('\n')))));
  // After writes, the counters the status lacked before are not all zero.
  CHECK(s.Num(V(0, "integrity.bitmap_syncs")) > 0);
  CHECK(s.Num(V(0, "integrity.table_loads")) > 0);

  // Every member: the stats line has the JSON's keys (but the labels), with the same values.
  for (size_t m = 0; m < 2; ++m) {
    const std::string mark =
        "info: stats: volume safe member " + std::to_string(m) + " " + safe.uri(m) + ": ";
    const auto member_line = LastStatsLine(log, mark);
    const size_t j = MemberIndex(s, "safe", m);
    std::set<std::string> keys;
    for (const auto& [key, value] : member_line) {
      keys.insert(key);
      const std::string want = key == "state"    ? s.Str(M(j, key))
                               : key == "fenced" ? (s.Bool(M(j, key)) ? "yes" : "no")
                                                 : std::to_string(s.Num(M(j, key)));
      CHECK_MESSAGE(value == want, "member " << m << " " << key);
    }
    std::set<std::string> want = kMemberKeys;
    for (const char* label : {"volume", "index", "uri"})
      want.erase(label);
    CHECK(keys == want);
  }
}

// A Unix socket at `path` that answers anything with `answer` (ignoring errors once the client
// is gone), for one client, on a thread of its own.
class FakeControl {
 public:
  FakeControl(const std::string& path, std::string answer)
      : fd_(::socket(AF_UNIX, SOCK_STREAM, 0)) {
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    REQUIRE(path.size() < sizeof address.sun_path);
    std::memcpy(address.sun_path, path.c_str(), path.size() + 1);
    REQUIRE(::bind(fd_.get(), reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
    REQUIRE(::chmod(path.c_str(), 0777) == 0);
    REQUIRE(::listen(fd_.get(), 4) == 0);
    thread_ = std::thread([this, answer = std::move(answer)] { AnswerOne(answer); });
  }
  ~FakeControl() {
    stop_ = true;
    thread_.join();
  }
  bool answered() const { return answered_; }

 private:
  void AnswerOne(const std::string& answer) {
    const auto deadline = SteadyClock::now() + 20s;
    while (!stop_ && SteadyClock::now() < deadline) {
      pollfd p{fd_.get(), POLLIN, 0};
      if (::poll(&p, 1, 20) <= 0) continue;
      Fd client(::accept4(fd_.get(), nullptr, nullptr, SOCK_CLOEXEC));
      if (client.get() < 0) continue;
      answered_ = true;
      for (size_t sent = 0; sent < answer.size();) {
        const ssize_t n =
            ::send(client.get(), answer.data() + sent, answer.size() - sent, MSG_NOSIGNAL);
        if (n <= 0) break;  // the client stopped reading and closed
        sent += static_cast<size_t>(n);
      }
      return;
    }
  }

  Fd fd_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> answered_{false};
  std::thread thread_;
};

// The audit's C4 (W13), second half: status read the whole answer into memory, however long.
TEST_CASE("status cuts off an answer no aggregator would give") {
  TempDir dir("dst-status-oversized");
  const std::string path = dir.File("ctl.sock");
  FakeControl fake(path, std::string(64 * kMiB, 'x'));
  const CommandResult r = RunAggregator({"status", "--control", path});
  CHECK(r.exit_code == 1);
  CHECK(r.stdout_text.empty());
  CHECK(r.stderr_text == "dst-aggregator: error: control socket " + path +
                             ": an answer longer than 16 MiB: not an aggregator's\n");
}

// The audit's C4 (W13): without $XDG_RUNTIME_DIR the default control socket was
// /tmp/dst-aggregator-UID.sock, which another user could bind first: `status` printed that
// user's text, and serve ran without a control socket. The socket now lives in a directory of
// the user's own in $TMPDIR (mode 0700); one that someone else made, or that others can write
// to, is refused by status and given up by serve, and nothing inside it is talked to. As root,
// the test runs serve and status as nobody, in a shared directory root squats in.
TEST_CASE("the default control socket in a shared temporary directory cannot be squatted") {
  TempDir shared("dst-status-shared-tmp");
  REQUIRE(::chmod(shared.path().c_str(), 01777) == 0);  // as /tmp
  const bool root = ::geteuid() == 0;
  const uid_t victim = root ? 65534 : ::geteuid();
  const Argv as_victim = root ? Argv{"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                                     DST_AGGREGATOR_PATH}
                              : Argv{DST_AGGREGATOR_PATH};
  const std::vector<std::string> env = {"XDG_RUNTIME_DIR=", "TMPDIR=" + shared.path()};
  const std::string dir = shared.File("dst-aggregator-" + std::to_string(victim));
  auto status = [&] { return RunCommand(Concat(as_victim, {"status"}), 30s, env); };
  NbdkitOptions member_options;
  member_options.plugin = "memory";
  member_options.args = {"size=1M"};
  member_options.transport = Transport::kTcp4;  // reachable by the victim's uid
  NbdkitServer member(member_options);
  // serve as the victim, on a TCP port: returns once it serves, with its stderr so far.
  const int port = PickFreePort();
  auto start = [&](std::optional<Process>& serve) {
    serve.emplace(Concat(as_victim, {"serve", "--raw", "--listen",
                                     "127.0.0.1:" + std::to_string(port), member.uri()}),
                  env);
    const auto deadline = SteadyClock::now() + 20s;
    while (serve->Running() && !Contains(serve->stderr_text(), "info: serving ") &&
           SteadyClock::now() < deadline)
      std::this_thread::sleep_for(10ms);
    INFO("serve stderr:\n" << serve->stderr_text());
    REQUIRE(Contains(serve->stderr_text(), "info: serving "));
  };
  auto stop = [](std::optional<Process>& serve) {
    serve->Kill(SIGTERM);
    CHECK(serve->Wait(10s) == 0);
    CHECK(SanitizerReportLines(serve->stderr_text()).empty());
    serve.reset();
  };
  const std::string refusal =
      "control directory " + dir + ": " +
      (root ? "owned by uid 0, not by us (uid 65534)" : std::string("mode 0777, not 0700")) +
      ": another user may have made it; not using it (remove it, or give --control PATH)";

  {
    // The squatter's directory, open to all, with a socket that answers fake text.
    REQUIRE(::mkdir(dir.c_str(), 0777) == 0);
    REQUIRE(::chmod(dir.c_str(), 0777) == 0);
    FakeControl fake(dir + "/control.sock", "VOLUME fake\n");
    const CommandResult r = status();
    INFO("status stdout:\n" << r.stdout_text << "stderr:\n" << r.stderr_text);
    CHECK(r.exit_code == 1);
    CHECK(r.stdout_text.empty());
    CHECK(r.stderr_text == "dst-aggregator: error: " + refusal + "\n");
    // serve gives the directory up, says why, and serves without a control socket.
    std::optional<Process> serve;
    start(serve);
    CHECK(Contains(serve->stderr_text(), "warning: " + refusal +
                                             ": no control socket (give one with --control "
                                             "PATH)\n"));
    NbdClient client;
    REQUIRE_NBD_OK(client.Connect("nbd://127.0.0.1:" + std::to_string(port) + "/vol0"));
    CHECK(client.Size() == static_cast<int64_t>(kMiB));
    CHECK_NBD_OK(client.Shutdown());
    stop(serve);
    CHECK_FALSE(fake.answered());
  }

  // Without the squatter: serve makes the directory, 0700 and the victim's, and status finds it.
  std::filesystem::remove_all(dir);
  std::optional<Process> serve;
  start(serve);
  struct stat st {};
  REQUIRE(::lstat(dir.c_str(), &st) == 0);
  CHECK(S_ISDIR(st.st_mode));
  CHECK((st.st_mode & 07777) == 0700);
  CHECK(st.st_uid == victim);
  CHECK(Contains(serve->stderr_text(), "info: control socket " + dir + "/control.sock\n"));
  const CommandResult r = status();
  INFO("status stdout:\n" << r.stdout_text << "stderr:\n" << r.stderr_text);
  CHECK(r.exit_code == 0);
  CHECK(r.stdout_text.rfind("uptime ", 0) == 0);
  CHECK(Contains(r.stdout_text, member.uri()));
  stop(serve);
  CHECK(::lstat((dir + "/control.sock").c_str(), &st) != 0);
}

// The configurations in examples/ are what users copy: each must check out as written.
TEST_CASE("every example aggregator configuration passes serve --check-config") {
  std::vector<std::string> files;
  for (const auto& entry : std::filesystem::directory_iterator(DST_EXAMPLES_DIR)) {
    const std::string name = entry.path().filename().string();
    if (name.starts_with("aggregator") && name.ends_with(".toml"))
      files.push_back(entry.path().string());
  }
  std::sort(files.begin(), files.end());
  // aggregator.toml (stripe and raw linear) and aggregator-mirror.toml (mirror and raid10).
  REQUIRE(files.size() >= 2);
  for (const std::string& file : files) {
    const CommandResult r = RunAggregator({"serve", "--check-config", "--config", file});
    INFO(file << "\nstdout:\n" << r.stdout_text << "stderr:\n" << r.stderr_text);
    CHECK(r.exit_code == 0);
    CHECK(r.stdout_text == "configuration OK: 2 volume(s)\n");
  }
}

TEST_SUITE_END();

}  // namespace
}  // namespace dst::test::aggregator_status_test
