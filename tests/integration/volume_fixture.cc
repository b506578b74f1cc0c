#include "tests/integration/volume_fixture.h"

#include <algorithm>
#include <chrono>
#include <string>
#include <vector>

namespace dst::test {

using namespace std::chrono_literals;

FileMembers::FileMembers(std::initializer_list<uint64_t> sizes) {
  for (uint64_t size : sizes)
    Add(size);
}

FileMembers::FileMembers(size_t count, uint64_t size) {
  for (size_t i = 0; i < count; ++i)
    Add(size);
}

bool FileMembers::AllBlank() const {
  return std::all_of(files_.begin(), files_.end(),
                     [](const std::string& f) { return AllZero(ReadFile(f)); });
}

void FileMembers::Add(uint64_t size) {
  files_.push_back(dir_.File("member" + std::to_string(files_.size()) + ".img"));
  servers_.push_back(std::make_unique<PluginServer>(
      std::vector<std::string>{"file=" + files_.back(), "size=" + std::to_string(size)}));
  uris_.push_back(servers_.back()->uri());
}

std::vector<std::string> Concat(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

namespace {

// A command runs without LeakSanitizer: it exits at once, so a leak of its own costs nothing,
// and the scan at its exit was a fifth of its CPU (the tests run thousands). The servers the
// tests start keep it, and so do the code paths a command shares with them.
std::vector<std::string> CommandEnvironment() {
  return {AsanOptionsEntry("detect_leaks=0")};
}

}  // namespace

CommandResult RunAggregator(const std::vector<std::string>& args) {
  const CommandResult r =
      RunCommand(Concat({DST_AGGREGATOR_PATH}, args), 30s, CommandEnvironment());
  CHECK_MESSAGE(SanitizerReportLines(r.stderr_text).empty(), r.stderr_text);
  return r;
}

std::string StatusJson(const AggregatorServer& aggregator) {
  const CommandResult r =
      RunAggregator({"status", "--json", "--control", aggregator.control_path()});
  REQUIRE_MESSAGE(r.exit_code == 0,
                  "status --json exited " << r.exit_code << ": " << r.stderr_text);
  return r.stdout_text;
}

CommandResult Create(const std::vector<std::string>& options,
                     const std::vector<std::string>& uris) {
  return RunAggregator(Concat(Concat({"create"}, options), uris));
}

CommandResult CreateOk(const std::vector<std::string>& options,
                       const std::vector<std::string>& uris) {
  const CommandResult r = Create(options, uris);
  REQUIRE_MESSAGE(r.exit_code == 0, "stdout:\n" << r.stdout_text << "stderr:\n" << r.stderr_text);
  return r;
}

AggregatorOptions ServeOptions(std::vector<std::string> args) {
  AggregatorOptions o;
  o.binary = DST_AGGREGATOR_PATH;
  o.args = std::move(args);
  o.listen = AggregatorListen::kUnix;
  return o;
}

Served::Served(std::vector<std::string> args, std::string clean_volume)
    : AggregatorServer(ServeOptions(std::move(args))), clean_volume_(std::move(clean_volume)) {}

Served::~Served() {
  Stop();
}

void Served::Stop() {
  if (stopped_) return;
  stopped_ = true;
  const int code = AggregatorServer::Stop();
  const std::string log = stderr_text();
  CHECK_MESSAGE(code == 0, "dst-aggregator exit code " << code << "\n" << log);
  CHECK_MESSAGE(SanitizerReports().empty(), "sanitizer reports:\n" << log);
  if (!clean_volume_.empty())
    CHECK_MESSAGE(Contains(log, "volume " + clean_volume_ + ": stopped clean"), log);
}

void CheckCommandOk(const CommandResult& r, const std::string& answer) {
  INFO("stdout:\n" << r.stdout_text << "stderr:\n" << r.stderr_text);
  CHECK(r.exit_code == 0);
  CHECK(r.stdout_text == answer + "\n");
}

void CheckCommandRefused(const CommandResult& r, const std::string& error) {
  INFO("stdout:\n" << r.stdout_text << "stderr:\n" << r.stderr_text);
  CHECK(r.exit_code == 1);
  CHECK(r.stdout_text.empty());
  CHECK(Contains(LineWithAll(r.stderr_text, {"error: "}), "error: " + error));
}

// A serve command line the aggregator must refuse: it exits 1 with exactly one line on stderr,
// the error, naming every needle.
void CheckServeRefused(const std::vector<std::string>& args,
                       std::initializer_list<std::string_view> needles) {
  AggregatorOptions o = ServeOptions(args);
  o.start_timeout = 20s;
  const StartFailure f = AggregatorServer::StartExpectingFailure(std::move(o));
  INFO("serve " << JoinArgv(args) << "\nstderr:\n" << f.stderr_text);
  CHECK(f.exit_code == 1);
  CHECK(CountOf(f.stderr_text, "\n") == 1);
  CHECK(f.stderr_text.rfind("dst-aggregator: error: ", 0) == 0);
  for (std::string_view n : needles)
    CHECK_MESSAGE(Contains(f.stderr_text, n), "missing: " << n);
}

}  // namespace dst::test
