#include "tests/integration/plugin_fixture.h"

#include <sstream>

namespace dst::test {

NbdkitOptions PluginOptions(std::vector<std::string> args, Transport transport) {
  NbdkitOptions o;
  o.nbdkit = DST_TOOL_NBDKIT;
  o.plugin = DST_PLUGIN_PATH;
  o.args = std::move(args);
  o.transport = transport;
  return o;
}

PluginServer::PluginServer(std::vector<std::string> args, Transport transport)
    : NbdkitServer(PluginOptions(std::move(args), transport)) {}

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

}  // namespace dst::test
