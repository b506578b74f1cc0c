#include "aggregator/map/mapped_devices.h"

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "aggregator/integrity/superblock_json.h"
#include "common/units.h"

namespace dst::aggregator::map {

namespace {

constexpr std::string_view kPrefix = "dst:";

bool NeedsEscape(unsigned char c) {
  return c <= 0x20 || c == 0x7f || c == '%' || c == '@';
}

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

std::optional<std::string> Unescape(std::string_view text) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '%') {
      out += text[i];
      continue;
    }
    const int high = i + 2 < text.size() ? HexDigit(text[i + 1]) : -1;
    const int low = i + 2 < text.size() ? HexDigit(text[i + 2]) : -1;
    if (high < 0 || low < 0) return std::nullopt;
    out += static_cast<char>(high * 16 + low);
    i += 2;
  }
  return out;
}

// The file's first line, without its newline; nullopt when it cannot be read.
std::optional<std::string> ReadLine(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::string line;
  if (!in || !std::getline(in, line)) return std::nullopt;
  return line;
}

std::optional<int64_t> ReadNumber(const std::filesystem::path& path) {
  const std::optional<std::string> line = ReadLine(path);
  if (!line || line->empty()) return std::nullopt;
  char* end = nullptr;
  const long long value = std::strtoll(line->c_str(), &end, 10);
  if (*end != '\0') return std::nullopt;
  return value;
}

int CountEntries(const std::filesystem::path& dir) {
  std::error_code ec;
  int n = 0;
  for (auto it = std::filesystem::directory_iterator(dir, ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec))
    if (it->is_directory(ec)) ++n;
  return n;
}

}  // namespace

std::string FormatBackendId(const BackendId& id) {
  std::string out(kPrefix);
  for (unsigned char c : id.volume) {
    if (!NeedsEscape(c)) {
      out += static_cast<char>(c);
      continue;
    }
    char hex[4];
    std::snprintf(hex, sizeof hex, "%%%02X", c);
    out += hex;
  }
  out += "@" + id.endpoint;
  return id.connections > 0 ? out + "#" + std::to_string(id.connections) : out;
}

std::optional<BackendId> ParseBackendId(std::string_view text) {
  if (text.substr(0, kPrefix.size()) != kPrefix) return std::nullopt;
  text.remove_prefix(kPrefix.size());
  const size_t at = text.find('@');
  if (at == std::string_view::npos || at == 0 || at + 1 == text.size()) return std::nullopt;
  std::optional<std::string> volume = Unescape(text.substr(0, at));
  if (!volume) return std::nullopt;
  std::string_view endpoint = text.substr(at + 1);
  unsigned connections = 0;
  // "#N" at the end; the endpoint (a Unix path) may hold '#' itself.
  if (const size_t hash = endpoint.rfind('#'); hash != std::string_view::npos) {
    const std::string_view n = endpoint.substr(hash + 1);
    if (!n.empty() && n.size() <= 3 &&
        n.find_first_not_of("0123456789") == std::string_view::npos) {
      connections = static_cast<unsigned>(std::stoul(std::string(n)));
      endpoint = endpoint.substr(0, hash);
    }
  }
  if (endpoint.empty()) return std::nullopt;
  return BackendId{*volume, std::string(endpoint), connections};
}

std::optional<int> NbdIndex(std::string_view device) {
  if (device.substr(0, 5) == "/dev/") device.remove_prefix(5);
  if (device.substr(0, 3) != "nbd") return std::nullopt;
  device.remove_prefix(3);
  if (device.empty() || device.size() > 6 ||
      device.find_first_not_of("0123456789") != std::string_view::npos)
    return std::nullopt;
  return std::stoi(std::string(device));
}

std::optional<MappedDevice> ReadMappedDevice(const std::string& sys_block, int index) {
  const std::filesystem::path dir =
      std::filesystem::path(sys_block) / ("nbd" + std::to_string(index));
  const std::optional<int64_t> pid = ReadNumber(dir / "pid");
  if (!pid) return std::nullopt;
  MappedDevice d;
  d.index = index;
  d.device = "/dev/nbd" + std::to_string(index);
  d.pid = *pid;
  d.backend = ReadLine(dir / "backend").value_or("");
  d.dst = ParseBackendId(d.backend);
  d.size_bytes = static_cast<uint64_t>(std::max<int64_t>(0, ReadNumber(dir / "size").value_or(0)))
                 << 9;
  d.connections = d.dst && d.dst->connections > 0 ? static_cast<int>(d.dst->connections)
                                                  : CountEntries(dir / "mq");
  return d;
}

std::vector<MappedDevice> ListMappedDevices(const std::string& sys_block) {
  std::vector<int> indexes;
  std::error_code ec;
  for (auto it = std::filesystem::directory_iterator(sys_block, ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec))
    if (const std::optional<int> index = NbdIndex(it->path().filename().string()))
      indexes.push_back(*index);
  std::sort(indexes.begin(), indexes.end());
  std::vector<MappedDevice> devices;
  for (int index : indexes)
    if (std::optional<MappedDevice> d = ReadMappedDevice(sys_block, index))
      devices.push_back(std::move(*d));
  return devices;
}

std::vector<MappedDevice> DevicesOfVolume(const std::vector<MappedDevice>& devices,
                                          const std::string& volume) {
  std::vector<MappedDevice> out;
  for (const MappedDevice& d : devices)
    if (d.dst && d.dst->volume == volume) out.push_back(d);
  return out;
}

std::string MappedTable(const std::vector<MappedDevice>& devices) {
  std::ostringstream out;
  char line[512];
  std::snprintf(line, sizeof line, "%-12s %-16s %10s %5s %8s  %s\n", "DEVICE", "VOLUME", "SIZE",
                "CONNS", "PID", "ENDPOINT");
  out << line;
  for (const MappedDevice& d : devices) {
    if (!d.dst) continue;
    std::snprintf(line, sizeof line, "%-12s %-16s %10s %5d %8ld  %s\n", d.device.c_str(),
                  d.dst->volume.c_str(), FormatSize(d.size_bytes).c_str(), d.connections,
                  d.pid.value_or(0), d.dst->endpoint.c_str());
    out << line;
  }
  return out.str();
}

std::string MappedJson(const std::vector<MappedDevice>& devices) {
  std::ostringstream out;
  out << "[";
  bool first = true;
  for (const MappedDevice& d : devices) {
    if (!d.dst) continue;
    out << (first ? "\n  " : ",\n  ") << "{\"device\": " << integrity::JsonQuote(d.device)
        << ", \"volume\": " << integrity::JsonQuote(d.dst->volume)
        << ", \"endpoint\": " << integrity::JsonQuote(d.dst->endpoint)
        << ", \"size_bytes\": " << d.size_bytes << ", \"connections\": " << d.connections
        << ", \"pid\": " << (d.pid ? std::to_string(*d.pid) : "null") << "}";
    first = false;
  }
  out << (first ? "]\n" : "\n]\n");
  return out.str();
}

std::string WithMappedTable(const std::string& answer, const std::vector<MappedDevice>& devices) {
  const bool any = std::any_of(devices.begin(), devices.end(),
                               [](const MappedDevice& d) { return d.dst.has_value(); });
  if (!any || answer.rfind("error: ", 0) == 0) return answer;
  return answer + "\n" + MappedTable(devices);
}

std::string WithMappedJson(const std::string& answer, const std::vector<MappedDevice>& devices) {
  const size_t end = answer.rfind('}');
  if (end == std::string::npos || answer.rfind("error: ", 0) == 0) return answer;
  std::string mapped = MappedJson(devices);
  mapped.pop_back();  // its newline
  return answer.substr(0, end) + ",\n \"mapped\": " + mapped + answer.substr(end);
}

}  // namespace dst::aggregator::map
