#include "aggregator/control/status_report.h"

#include <cstdio>
#include <functional>
#include <map>
#include <sstream>

#include "aggregator/integrity/superblock_json.h"
#include "common/progress.h"
#include "common/units.h"

namespace dst::control {

namespace {

using integrity::JsonQuote;

using Field = volume::NamedCounter;

const std::vector<Field> kNoFields;

const std::vector<Field>& IntegrityFields(const VolumeStatus& v) {
  return v.integrity ? v.integrity->counters : kNoFields;
}

// "name=value name=value".
std::string StatsFields(const std::vector<Field>& fields) {
  std::string out;
  for (const Field& f : fields)
    out += std::string(out.empty() ? "" : " ") + f.name + "=" + std::to_string(f.value);
  return out;
}

void AppendJsonFields(std::ostringstream& out, const std::vector<Field>& fields) {
  for (const Field& f : fields)
    out << ", " << JsonQuote(f.name) << ": " << f.value;
}

}  // namespace

std::vector<volume::NamedCounter> TrafficCounters(const server::TrafficCounts& t) {
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

std::vector<volume::NamedCounter> MemberCounters(const MemberStatus& m) {
  const member::MemberCounters& c = m.counters;
  return {
      {"epoch", m.epoch, false, "Fencing epoch of the member's connections"},
      {"connections", m.connections, false, "Connections to the member"},
      {"in_flight", m.in_flight, false, "Member I/Os sent and not yet answered"},
      {"waiting", m.waiting, false, "Member I/Os waiting for a connection or a resend delay"},
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

std::string MemberStatsFields(const MemberStatus& m) {
  return "state=" + m.state + " fenced=" + (m.fenced ? "yes" : "no") + " " +
         StatsFields(MemberCounters(m));
}

std::vector<volume::NamedCounter> StagingLogCounters(const volume::StagingLogState& l) {
  return {
      {"used_bytes", l.used_bytes, false, "Staging log ring bytes held by records"},
      {"ring_size", l.ring_size, false, "Staging log ring size in bytes"},
      {"head_sequence", l.head_sequence, false, "Sequence of the newest durable log record"},
      {"destaged_sequence", l.destaged_sequence, false,
       "Sequence up to which the log's records are on the members"},
      {"pending_bytes", l.pending_bytes, false, "Log bytes of the records not yet destaged"},
      {"pending_age_ms", l.pending_age_ms, false,
       "Milliseconds the oldest record not yet destaged has waited"},
  };
}

std::string StagingLogStatsFields(const volume::StagingLogState& l) {
  return "state=" + l.state + " mode=" + l.mode + " " + StatsFields(StagingLogCounters(l));
}

std::string IntegrityStatsFields(const volume::IntegrityState& i) {
  return "state=" + i.state + " checksum=" + i.checksum + " " + StatsFields(i.counters);
}

std::string ShortGeneration(const std::string& generation) {
  return generation.substr(0, 8);
}

std::string RedundancyStatsFields(const volume::RedundancyState& r) {
  std::string sets;
  for (const std::string& health : r.set_health)
    sets += "[" + health + "]";
  return "generation=" + ShortGeneration(r.generation) + " sets=" + sets;
}

std::string SlotStatsFields(const volume::SlotState& s) {
  return "state=" + s.state + " stale_since=" + std::to_string(s.stale_since) +
         " repaired_blocks=" + std::to_string(s.repaired_blocks) +
         " read_failovers=" + std::to_string(s.read_failovers);
}

std::string JobText(const volume::JobState& j) {
  const double rate =
      j.state == "running" && j.bytes_per_second > 0 ? static_cast<double>(j.bytes_per_second) : -1;
  std::string out = j.kind + " " + j.state + " " +
                    Progress::LineAtRate(j.what, j.done_bytes, j.total_bytes, rate);
  if (!j.detail.empty()) out += " (" + j.detail + ")";
  return out;
}

namespace {

std::string RateText(const VolumeStatus& v) {
  return "rate " + FormatSize(v.rate_min) + "/s to " + FormatSize(v.rate_max) + "/s";
}

// Checksummed volumes: the rate limits, then one line per background job.
void AppendBackgroundText(std::ostringstream& out, const StatusReport& report) {
  bool header = false;
  char name[32];
  for (const VolumeStatus& v : report.volumes) {
    if (!v.integrity) continue;
    if (!header) out << "\nVOLUME           BACKGROUND\n";
    header = true;
    std::snprintf(name, sizeof name, "%-16s ", v.name.c_str());
    out << name << RateText(v) << "\n";
    for (const volume::JobState& j : v.jobs)
      out << name << JobText(j) << "\n";
  }
}

void AppendBackgroundJson(std::ostringstream& out, const VolumeStatus& v) {
  out << ", \"background\": {\"rate_min_bytes\": " << v.rate_min
      << ", \"rate_max_bytes\": " << v.rate_max << ", \"jobs\": [";
  for (size_t i = 0; i < v.jobs.size(); ++i) {
    const volume::JobState& j = v.jobs[i];
    out << (i ? ", " : "") << "{\"kind\": " << JsonQuote(j.kind)
        << ", \"what\": " << JsonQuote(j.what) << ", \"state\": " << JsonQuote(j.state)
        << ", \"detail\": " << JsonQuote(j.detail) << ", \"done_bytes\": " << j.done_bytes
        << ", \"total_bytes\": " << j.total_bytes
        << ", \"bytes_per_second\": " << j.bytes_per_second << ", \"eta_seconds\": "
        << (j.eta_seconds ? std::to_string(*j.eta_seconds) : std::string("null")) << "}";
  }
  out << "]}";
}

void AppendStagingLogJson(std::ostringstream& out, const volume::StagingLogState& l) {
  out << ", \"staging_log\": {\"path\": " << JsonQuote(l.path)
      << ", \"state\": " << JsonQuote(l.state) << ", \"mode\": " << JsonQuote(l.mode);
  AppendJsonFields(out, StagingLogCounters(l));
  out << "}";
}

// Volumes served through a staging log: one line each.
void AppendStagingLogText(std::ostringstream& out, const StatusReport& report) {
  bool header = false;
  char name[32];
  for (const VolumeStatus& v : report.volumes) {
    if (!v.staging_log) continue;
    if (!header) out << "\nVOLUME           STAGING LOG\n";
    header = true;
    std::snprintf(name, sizeof name, "%-16s ", v.name.c_str());
    out << name << v.staging_log->path << " " << StagingLogStatsFields(*v.staging_log) << "\n";
  }
}

void AppendRedundancyJson(std::ostringstream& out, const volume::RedundancyState& r) {
  out << ", \"redundancy\": {\"copies\": " << r.copies
      << ", \"generation\": " << JsonQuote(r.generation) << ", \"sets\": [";
  for (size_t i = 0; i < r.set_health.size(); ++i)
    out << (i ? ", " : "") << JsonQuote(r.set_health[i]);
  out << "], \"slots\": [";
  for (size_t i = 0; i < r.slots.size(); ++i) {
    const volume::SlotState& s = r.slots[i];
    out << (i ? ", " : "") << "{\"slot\": " << i << ", \"uri\": " << JsonQuote(s.uri)
        << ", \"state\": " << JsonQuote(s.state) << ", \"stale_since\": " << s.stale_since
        << ", \"repaired_blocks\": " << s.repaired_blocks
        << ", \"read_failovers\": " << s.read_failovers
        << ", \"write_mostly\": " << (s.write_mostly ? "true" : "false") << "}";
  }
  out << "]}";
}

// Mirror and raid10 volumes: the health of every set, then every slot.
void AppendRedundancyText(std::ostringstream& out, const StatusReport& report) {
  bool header = false;
  char line[512];
  for (const VolumeStatus& v : report.volumes) {
    if (!v.redundancy) continue;
    const volume::RedundancyState& r = *v.redundancy;
    if (!header)
      out << "\n"
          << "VOLUME           COPIES GENERATION SETS\n";
    header = true;
    std::string sets;
    for (const std::string& health : r.set_health)
      sets += (sets.empty() ? "[" : " [") + health + "]";
    std::snprintf(line, sizeof line, "%-16s %6u %-10s %s\n", v.name.c_str(), r.copies,
                  ShortGeneration(r.generation).c_str(), sets.c_str());
    out << line;
  }
  if (!header) return;
  std::snprintf(line, sizeof line, "\n%-16s %4s %4s %-10s %11s %8s %9s  %s\n", "VOLUME", "SLOT",
                "SET", "STATE", "STALE_SINCE", "REPAIRED", "FAILOVERS", "URI");
  out << line;
  for (const VolumeStatus& v : report.volumes) {
    if (!v.redundancy) continue;
    const volume::RedundancyState& r = *v.redundancy;
    for (size_t i = 0; i < r.slots.size(); ++i) {
      const volume::SlotState& s = r.slots[i];
      const std::string since = s.stale_since ? std::to_string(s.stale_since) : "-";
      std::snprintf(line, sizeof line, "%-16s %4zu %4zu %-10s %11s %8llu %9llu  %s\n",
                    v.name.c_str(), i, r.copies ? i / r.copies : 0, s.state.c_str(), since.c_str(),
                    static_cast<unsigned long long>(s.repaired_blocks),
                    static_cast<unsigned long long>(s.read_failovers),
                    s.uri.empty() ? "(missing)" : s.uri.c_str());
      std::string text = line;
      if (s.write_mostly) text.insert(text.size() - 1, " (write-mostly)");
      out << text;
    }
  }
}

}  // namespace

std::string StatusToJson(const StatusReport& report) {
  std::ostringstream out;
  out << "{\"uptime_seconds\": " << report.uptime_seconds << ",\n \"loop_clients\": [";
  for (size_t i = 0; i < report.loop_clients.size(); ++i)
    out << (i ? ", " : "") << report.loop_clients[i];
  out << "],\n \"volumes\": [";
  for (size_t i = 0; i < report.volumes.size(); ++i) {
    const VolumeStatus& v = report.volumes[i];
    out << (i ? ",\n  " : "\n  ") << "{\"name\": " << JsonQuote(v.name)
        << ", \"layout\": " << JsonQuote(v.layout)
        << ", \"checksummed\": " << (v.integrity ? "true" : "false") << ", \"size\": " << v.size
        << ", \"members\": " << v.members;
    AppendJsonFields(out, TrafficCounters(v.traffic));
    if (v.integrity) {
      out << ", \"integrity\": {\"state\": " << JsonQuote(v.integrity->state)
          << ", \"checksum\": " << JsonQuote(v.integrity->checksum);
      AppendJsonFields(out, v.integrity->counters);
      out << "}";
      AppendBackgroundJson(out, v);
    }
    if (v.redundancy) AppendRedundancyJson(out, *v.redundancy);
    if (v.staging_log) AppendStagingLogJson(out, *v.staging_log);
    out << "}";
  }
  out << "],\n \"members\": [";
  for (size_t i = 0; i < report.members.size(); ++i) {
    const MemberStatus& m = report.members[i];
    out << (i ? ",\n  " : "\n  ") << "{\"volume\": " << JsonQuote(m.volume)
        << ", \"index\": " << m.index << ", \"uri\": " << JsonQuote(m.uri)
        << ", \"state\": " << JsonQuote(m.state)
        << ", \"fenced\": " << (m.fenced ? "true" : "false");
    AppendJsonFields(out, MemberCounters(m));
    out << "}";
  }
  out << "]}\n";
  return out.str();
}

std::string StatusToText(const StatusReport& report) {
  std::ostringstream out;
  char line[512];
  out << "uptime " << report.uptime_seconds << " s, clients by event loop:";
  for (uint64_t clients : report.loop_clients)
    out << " " << clients;
  out << "\n\n";
  std::snprintf(line, sizeof line, "%-16s %-7s %-14s %9s %7s %10s %10s %10s %8s %8s %10s\n",
                "VOLUME", "LAYOUT", "CHECKSUMS", "SIZE", "CLIENTS", "REQUESTS", "READ", "WRITTEN",
                "ERRORS", "AVG_US", "CKSUM_ERR");
  out << line;
  for (const VolumeStatus& v : report.volumes) {
    const std::string checksums =
        v.integrity ? v.integrity->checksum + "/" + v.integrity->state : "raw";
    std::string cksum_errors = "-";
    for (const Field& f : IntegrityFields(v))
      if (std::string_view(f.name) == "checksum_errors") cksum_errors = std::to_string(f.value);
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
  // Checksummed volumes: every integrity counter, as the stats line has them.
  bool header = false;
  for (const VolumeStatus& v : report.volumes) {
    if (!v.integrity) continue;
    if (!header)
      out << "\n"
          << "VOLUME           INTEGRITY\n";
    header = true;
    std::snprintf(line, sizeof line, "%-16s ", v.name.c_str());
    out << line << IntegrityStatsFields(*v.integrity) << "\n";
  }
  AppendRedundancyText(out, report);
  AppendBackgroundText(out, report);
  AppendStagingLogText(out, report);
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
    const std::string name =
        "dst_" + stem + "_" + std::string(f.name) + (f.monotonic ? "_total" : "");
    Metric& m = metrics_[name];
    if (m.help.empty()) {
      m.help = f.help;
      m.type = f.monotonic ? "counter" : "gauge";
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

void AddRedundancyMetrics(Exposition& e, const std::string& labels,
                          const volume::RedundancyState& r) {
  for (size_t set = 0; set < r.set_health.size(); ++set) {
    uint64_t current = 0;
    for (char c : r.set_health[set])
      current += c == 'U';
    e.Add("set", {"current_copies", current, false, "Copies of the set that are current"},
          labels + ",set=\"" + std::to_string(set) + "\"");
  }
  for (size_t i = 0; i < r.slots.size(); ++i) {
    const volume::SlotState& s = r.slots[i];
    const std::string slot_labels =
        labels + ",slot=\"" + std::to_string(i) + "\",uri=\"" + LabelValue(s.uri) + "\"";
    e.Add("slot", {"current", s.state == "active", false, "1 when the slot is current"},
          slot_labels);
    e.Add("slot",
          {"stale_since", s.stale_since, false, "Event at which the slot stopped receiving writes"},
          slot_labels);
    e.Add("slot",
          {"repaired_blocks", s.repaired_blocks, true,
           "Blocks of the slot rewritten from another copy after a mismatch"},
          slot_labels);
    e.Add("slot",
          {"read_failovers", s.read_failovers, true,
           "Reads of the slot served by another copy after an error or mismatch"},
          slot_labels);
  }
}

// Per job, labelled by its kind and what it does.
void AddJobMetrics(Exposition& e, const std::string& labels, const volume::JobState& j) {
  const std::string job_labels =
      labels + ",kind=\"" + LabelValue(j.kind) + "\",what=\"" + LabelValue(j.what) + "\"";
  e.Add("job", {"running", j.state == "running", false, "1 while the job takes steps"}, job_labels);
  e.Add("job", {"paused", j.state == "paused", false, "1 while the job is paused"}, job_labels);
  e.Add("job", {"done_bytes", j.done_bytes, false, "Bytes of the job done"}, job_labels);
  e.Add("job", {"total_bytes", j.total_bytes, false, "Bytes the job covers"}, job_labels);
  e.Add(
      "job",
      {"bytes_per_second", j.bytes_per_second, false, "Bytes per second over the last few seconds"},
      job_labels);
  if (j.eta_seconds)
    e.Add("job", {"eta_seconds", *j.eta_seconds, false, "Seconds left at the current rate"},
          job_labels);
}

}  // namespace

std::string StatusToPrometheus(const StatusReport& report) {
  Exposition e;
  e.Add("aggregator", {"uptime_seconds", report.uptime_seconds, false, "Seconds since start"}, "");
  for (size_t i = 0; i < report.loop_clients.size(); ++i)
    e.Add("aggregator",
          {"loop_clients", report.loop_clients[i], false,
           "Clients of the volumes connected on the event loop (0: the home loop)"},
          "loop=\"" + std::to_string(i) + "\"");
  for (const VolumeStatus& v : report.volumes) {
    const std::string labels = "volume=\"" + LabelValue(v.name) + "\"";
    e.Add("volume", {"size_bytes", v.size, false, "Volume size in bytes"}, labels);
    for (const Field& f : TrafficCounters(v.traffic))
      e.Add("volume", f, labels);
    if (v.integrity) {
      e.Add("volume",
            {"clean", v.integrity->state == "clean", false, "1 when the superblocks say clean"},
            labels);
      for (const Field& f : v.integrity->counters)
        e.Add("volume", f, labels);
      e.Add("volume",
            {"background_rate_min_bytes", v.rate_min, false,
             "Bytes per second resync, rebuild and scrub may always use"},
            labels);
      e.Add("volume",
            {"background_rate_max_bytes", v.rate_max, false,
             "Bytes per second resync, rebuild and scrub may use while clients are idle"},
            labels);
      for (const volume::JobState& j : v.jobs)
        AddJobMetrics(e, labels, j);
    }
    if (v.redundancy) AddRedundancyMetrics(e, labels, *v.redundancy);
    if (v.staging_log) {
      e.Add("volume",
            {"staging_log_full", v.staging_log->state == "log_full", false,
             "1 while writes wait for staging log space"},
            labels);
      e.Add("volume",
            {"staging_log_write_through", v.staging_log->mode == "write-through", false,
             "1 when writes reach the members before their acknowledgement (--log-mode "
             "write-through)"},
            labels);
      for (Field f : StagingLogCounters(*v.staging_log)) {
        const std::string name = std::string("staging_log_") + f.name;
        f.name = name.c_str();
        e.Add("volume", f, labels);
      }
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
    for (const Field& f : MemberCounters(m))
      e.Add("member", f, labels);
  }
  return e.Render();
}

}  // namespace dst::control
