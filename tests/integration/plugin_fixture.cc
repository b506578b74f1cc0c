#include "tests/integration/plugin_fixture.h"

#include <algorithm>
#include <cstdio>
#include <sstream>
#include <stdexcept>

namespace dst::test {

NbdkitOptions PluginOptions(std::vector<std::string> args, Transport transport) {
  NbdkitOptions o;
  o.nbdkit = DST_TOOL_NBDKIT;
  o.plugin = DST_PLUGIN_PATH;
  o.args = std::move(args);
  o.transport = transport;
  return o;
}

namespace {

NbdkitOptions WithFlags(NbdkitOptions options, std::vector<std::string> nbdkit_flags) {
  options.nbdkit_flags = std::move(nbdkit_flags);
  return options;
}

}  // namespace

PluginServer::PluginServer(std::vector<std::string> args, Transport transport,
                           std::vector<std::string> nbdkit_flags)
    : NbdkitServer(WithFlags(PluginOptions(std::move(args), transport), std::move(nbdkit_flags))) {}

PluginServer::~PluginServer() {
  const int code = Stop();
  CHECK_MESSAGE(code == 0, "nbdkit exit code " << code << "\n" << stderr_text());
  const std::string reports = SanitizerReports();
  CHECK_MESSAGE(reports.empty(), "sanitizer reports in nbdkit's stderr:\n" << stderr_text());
}

StartFailure ExpectStartFailure(std::vector<std::string> args) {
  return NbdkitServer::StartExpectingFailure(PluginOptions(std::move(args)));
}

std::string WriteConfig(const TempDir& dir, std::string_view toml, std::string_view name) {
  const std::string path = dir.File(name);
  WriteFile(path, {reinterpret_cast<const uint8_t*>(toml.data()), toml.size()});
  return path;
}

std::string LineWithAll(const std::string& text, std::initializer_list<std::string_view> needles) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    bool all = true;
    for (std::string_view n : needles)
      all = all && Contains(line, n);
    if (all) return line;
  }
  return "";
}

bool Contains(std::string_view text, std::string_view needle) {
  return text.find(needle) != std::string_view::npos;
}

size_t CountOf(std::string_view text, std::string_view needle) {
  size_t n = 0;
  for (size_t at = text.find(needle); at != std::string_view::npos;
       at = text.find(needle, at + needle.size()))
    ++n;
  return n;
}

int64_t JsonNumber(const std::string& json, const std::string& key) {
  const std::string needle = "\"" + key + "\": ";
  const size_t at = json.find(needle);
  if (at == std::string::npos) return -1;
  return std::stoll(json.substr(at + needle.size()));
}

CommandResult RunOk(const Argv& argv, std::chrono::milliseconds timeout) {
  const CommandResult r = RunCommand(argv, timeout);
  INFO(JoinArgv(argv));
  REQUIRE_MESSAGE(r.exit_code == 0, "exit " << r.exit_code << "\nstdout:\n"
                                            << r.stdout_text << "\nstderr:\n"
                                            << r.stderr_text);
  return r;
}

// A refused dst-aggregator command: exit 1 and exactly one line on stderr, the error, naming every
// needle.
void CheckRefused(const CommandResult& r, std::initializer_list<std::string_view> needles) {
  INFO("stdout:\n" << r.stdout_text << "stderr:\n" << r.stderr_text);
  CHECK(r.exit_code == 1);
  CHECK(std::count(r.stderr_text.begin(), r.stderr_text.end(), '\n') == 1);
  CHECK(r.stderr_text.rfind("dst-aggregator: error: ", 0) == 0);
  for (std::string_view n : needles)
    CHECK_MESSAGE(Contains(r.stderr_text, n), "missing: " << n);
}

void CheckFioVerified(const Argv& argv, std::chrono::milliseconds timeout) {
  const CommandResult r = RunCommand(argv, timeout);
  INFO(JoinArgv(argv));
  INFO("stdout:\n" << r.stdout_text);
  INFO("stderr:\n" << r.stderr_text);
  CHECK(r.exit_code == 0);
  CHECK_FALSE(Contains(r.stdout_text + r.stderr_text, "verify:"));
  CHECK_FALSE(Contains(r.stdout_text + r.stderr_text, "bad magic"));
  CHECK(Contains(r.stdout_text, "err= 0"));
}

FioReport ParseFioJson(const std::string& fio_stdout) {
  TempDir dir("dst-fio-json");
  const std::string path = dir.File("fio.json");
  std::FILE* f = std::fopen(path.c_str(), "w");
  if (f == nullptr) throw std::runtime_error("cannot write " + path);
  std::fwrite(fio_stdout.data(), 1, fio_stdout.size(), f);
  std::fclose(f);
  // One line of numbers: error, then io_kib, ios, clat max for read and write.
  const char* script =
      "import json, sys\n"
      "s = open(sys.argv[1]).read()\n"
      "job = json.loads(s[s.index('{'):])['jobs'][0]\n"
      "out = [job['error']]\n"
      "for d in ('read', 'write'):\n"
      "    out += [job[d]['io_kbytes'], job[d]['total_ios'], job[d]['clat_ns']['max']]\n"
      "print(' '.join(str(int(x)) for x in out))\n";
  const CommandResult r = RunCommand({kPython3, "-c", script, path});
  std::istringstream numbers(r.stdout_text);
  FioReport report;
  if (r.exit_code != 0 || !(numbers >> report.error >> report.read.io_kib >> report.read.ios >>
                            report.read.clat_max_ns >> report.write.io_kib >> report.write.ios >>
                            report.write.clat_max_ns))
    throw std::runtime_error("no fio JSON report: " + r.stderr_text + "\nfio said:\n" + fio_stdout);
  return report;
}

}  // namespace dst::test
