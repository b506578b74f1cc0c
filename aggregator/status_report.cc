#include "aggregator/status_report.h"

#include <cstdio>
#include <functional>
#include <sstream>

#include "aggregator/integrity/superblock_json.h"
#include "common/units.h"

namespace dst::aggregator {

namespace {

using integrity::JsonQuote;

// One named number of a volume or member, with what each renderer needs.
struct Field {
  const char* name;  // JSON key and metric name stem
  uint64_t value;
  bool counter;  // monotonic: Prometheus _total
  const char* help;
};

std::vector<Field> TrafficFields(const server::VolumeTraffic& t) {
  return {
      {"clients", t.clients, false, "Clients connected to the volume"},
      {"connections", t.connections, true, "Client connections since start"},
      {"requests_in_flight", t.in_flight, false, "Client requests not yet answered"},
      {"requests", t.requests, true, "Client requests answered"},
      {"request_errors", t.errors, true, "Client requests answered with an error"},
      {"reads", t.reads, true, "Client reads answered"},
      {"writes", t.writes, true, "Client writes answered"},
      {"read_bytes", t.read_bytes, true, "Bytes read by clients"},
      {"written_bytes", t.write_bytes, true, "Bytes written by clients"},
      {"latency_avg_us", t.latency_avg_us(), false, "Average request latency, microseconds"},
      {"latency_max_us", t.latency_max_us, false, "Largest request latency, microseconds"},
  };
}

std::vector<Field> IntegrityFields(const IntegrityStatus& i) {
  return {
      {"checksum_errors", i.counters.checksum_errors, true,
       "Blocks that failed verification twice (EIO to the client)"},
      {"rereads_recovered", i.counters.rereads_recovered, true,
       "Blocks that verified when read a second time"},
      {"rmw_blocks", i.counters.rmw_blocks, true, "Partial blocks merged with a write"},
      {"recomputed_regions", i.counters.recomputed_regions, false,
       "Regions recomputed at the last assembly"},
      {"dirty_regions", i.dirty_regions, false, "Write-intent bits set"},
      {"table_pages", i.table_pages, false, "Checksum table pages cached"},
      {"table_dirty_pages", i.table_dirty, false, "Cached table pages not yet written back"},
  };
}

std::vector<Field> MemberFields(const MemberStatus& m) {
  const member::MemberCounters& c = m.counters;
  return {
      {"epoch", m.epoch, false, "Fencing epoch of the member's connections"},
      {"connections", m.connections, false, "Connections to the member"},
      {"in_flight", m.in_flight, false, "Member I/Os sent and not yet answered"},
      {"ios", c.ios, true, "Member I/Os answered with success"},
      {"bytes", c.bytes, true, "Payload bytes of member reads and writes"},
      {"timeouts", c.timeouts, true, "Member sends that passed their deadline"},
      {"errors", c.errors, true, "Error answers from the member"},
      {"resends", c.resends, true, "Member sends after the first"},
      {"reconnects", c.reconnects, true, "Connections re-established after a loss"},
      {"connect_failures", c.connect_failures, true, "Failed reconnect attempts"},
      {"failures", c.failures, true, "Member I/Os that failed to the volume"},
      {"pings", c.pings, true, "Keepalive pings"},
      {"checksum_errors", m.checksum_errors, true,
       "Blocks on the member that failed verification twice"},
      {"latency_avg_us", c.latency_count ? c.latency_total_us / c.latency_count : 0, false,
       "Average member I/O latency, microseconds"},
      {"latency_max_us", c.latency_max_us, false, "Largest member I/O latency, microseconds"},
  };
}

void AppendJsonFields(std::ostringstream& out, const std::vector<Field>& fields) {
  for (const Field& f : fields)
    out << ", " << JsonQuote(f.name) << ": " << f.value;
}

}  // namespace

std::string StatusToJson(const StatusReport& report) {
  std::ostringstream out;
  out << "{\"uptime_seconds\": " << report.uptime_seconds << ",\n \"volumes\": [";
  for (size_t i = 0; i < report.volumes.size(); ++i) {
    const VolumeStatus& v = report.volumes[i];
    out << (i ? ",\n  " : "\n  ") << "{\"name\": " << JsonQuote(v.name)
        << ", \"layout\": " << JsonQuote(v.layout)
        << ", \"checksummed\": " << (v.checksummed ? "true" : "false") << ", \"size\": " << v.size
        << ", \"members\": " << v.members;
    AppendJsonFields(out, TrafficFields(v.traffic));
    if (v.integrity) {
      out << ", \"integrity\": {\"state\": " << JsonQuote(v.integrity->state)
          << ", \"checksum\": " << JsonQuote(v.integrity->algorithm);
      AppendJsonFields(out, IntegrityFields(*v.integrity));
      out << "}";
    }
    out << "}";
  }
  out << "],\n \"members\": [";
  for (size_t i = 0; i < report.members.size(); ++i) {
    const MemberStatus& m = report.members[i];
    out << (i ? ",\n  " : "\n  ") << "{\"volume\": " << JsonQuote(m.volume)
        << ", \"index\": " << m.index << ", \"uri\": " << JsonQuote(m.uri)
        << ", \"state\": " << JsonQuote(m.state)
        << ", \"fenced\": " << (m.fenced ? "true" : "false");
    AppendJsonFields(out, MemberFields(m));
    out << "}";
  }
  out << "]}\n";
  return out.str();
}

std::string StatusToText(const StatusReport& report) {
  std::ostringstream out;
  char line[512];
  out << "uptime " << report.uptime_seconds << " s\n\n";
  std::snprintf(line, sizeof line, "%-16s %-7s %-14s %9s %7s %10s %10s %10s %8s %8s %10s\n",
                "VOLUME", "LAYOUT", "CHECKSUMS", "SIZE", "CLIENTS", "REQUESTS", "READ", "WRITTEN",
                "ERRORS", "AVG_US", "CKSUM_ERR");
  out << line;
  for (const VolumeStatus& v : report.volumes) {
    const std::string checksums =
        v.integrity ? v.integrity->algorithm + "/" + v.integrity->state : "raw";
    const std::string cksum_errors =
        v.integrity ? std::to_string(v.integrity->counters.checksum_errors) : "-";
    std::snprintf(
        line, sizeof line, "%-16s %-7s %-14s %9s %7llu %10llu %10s %10s %8llu %8llu %10s\n",
        v.name.c_str(), v.layout.c_str(), checksums.c_str(), FormatSize(v.size).c_str(),
        static_cast<unsigned long long>(v.traffic.clients),
        static_cast<unsigned long long>(v.traffic.requests),
        FormatSize(v.traffic.read_bytes).c_str(), FormatSize(v.traffic.write_bytes).c_str(),
        static_cast<unsigned long long>(v.traffic.errors),
        static_cast<unsigned long long>(v.traffic.latency_avg_us()), cksum_errors.c_str());
    out << line;
  }
  out << "\n";
  std::snprintf(line, sizeof line, "%-16s %3s %-13s %-6s %8s %8s %8s %8s %10s %9s  %s\n", "VOLUME",
                "#", "STATE", "FENCED", "INFLIGHT", "TIMEOUTS", "RESENDS", "RECONN", "FAILURES",
                "CKSUM_ERR", "URI");
  out << line;
  for (const MemberStatus& m : report.members) {
    std::snprintf(line, sizeof line,
                  "%-16s %3zu %-13s %-6s %8zu %8llu %8llu %8llu %10llu %9llu  %s\n",
                  m.volume.c_str(), m.index, m.state.c_str(), m.fenced ? "yes" : "no", m.in_flight,
                  static_cast<unsigned long long>(m.counters.timeouts),
                  static_cast<unsigned long long>(m.counters.resends),
                  static_cast<unsigned long long>(m.counters.reconnects),
                  static_cast<unsigned long long>(m.counters.failures),
                  static_cast<unsigned long long>(m.checksum_errors), m.uri.c_str());
    out << line;
  }
  return out.str();
}

namespace {

// Label values escape backslash, double quote and newline.
std::string LabelValue(const std::string& text) {
  std::string out;
  for (char c : text) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

// Every sample of one metric goes under one HELP and TYPE line.
class Exposition {
 public:
  void Add(const std::string& stem, const Field& f, const std::string& labels) {
    const std::string name = "dst_" + stem + "_" + f.name + (f.counter ? "_total" : "");
    Metric& m = metrics_[name];
    if (m.help.empty()) {
      m.help = f.help;
      m.type = f.counter ? "counter" : "gauge";
      order_.push_back(name);
    }
    m.samples +=
        name + (labels.empty() ? "" : "{" + labels + "}") + " " + std::to_string(f.value) + "\n";
  }
  std::string Render() const {
    std::string out;
    for (const std::string& name : order_) {
      const Metric& m = metrics_.at(name);
      out += "# HELP " + name + " " + m.help + "\n# TYPE " + name + " " + m.type + "\n" + m.samples;
    }
    return out;
  }

 private:
  struct Metric {
    std::string help, type, samples;
  };
  std::map<std::string, Metric> metrics_;
  std::vector<std::string> order_;
};

}  // namespace

std::string StatusToPrometheus(const StatusReport& report) {
  Exposition e;
  e.Add("aggregator", {"uptime_seconds", report.uptime_seconds, false, "Seconds since start"}, "");
  for (const VolumeStatus& v : report.volumes) {
    const std::string labels = "volume=\"" + LabelValue(v.name) + "\"";
    e.Add("volume", {"size_bytes", v.size, false, "Volume size in bytes"}, labels);
    for (const Field& f : TrafficFields(v.traffic))
      e.Add("volume", f, labels);
    if (v.integrity) {
      e.Add("volume",
            {"clean", v.integrity->state == "clean", false, "1 when the superblocks say clean"},
            labels);
      for (const Field& f : IntegrityFields(*v.integrity))
        e.Add("volume", f, labels);
    }
  }
  for (const MemberStatus& m : report.members) {
    const std::string labels = "volume=\"" + LabelValue(m.volume) + "\",member=\"" +
                               std::to_string(m.index) + "\",uri=\"" + LabelValue(m.uri) + "\"";
    for (const char* state : {"connecting", "ready", "reconnecting", "failed"})
      e.Add("member",
            {"state", m.state == state, false, "1 for the member's current state, else 0"},
            labels + ",state=\"" + state + "\"");
    e.Add("member", {"fenced", m.fenced, false, "1 when the member confirmed fencing"}, labels);
    for (const Field& f : MemberFields(m))
      e.Add("member", f, labels);
  }
  return e.Render();
}

}  // namespace dst::aggregator
