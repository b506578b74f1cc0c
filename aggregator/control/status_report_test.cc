// The renderers of status_report.h over one report with distinct numbers: every counter of a
// volume's integrity list and of a member appears under the same name with the same value in
// status --json, the status table's integrity section, the metrics and the stats lines.
#include "aggregator/control/status_report.h"

#include <map>
#include <sstream>

#include <doctest/doctest.h>

namespace dst::control::status_report_test {
namespace {

StatusReport SampleReport() {
  StatusReport report;
  report.uptime_seconds = 42;
  VolumeStatus v;
  v.name = "safe";
  v.layout = "stripe";
  v.size = 1 << 20;
  v.members = 2;
  v.traffic.requests = 7;
  volume::IntegrityState integrity{"dirty", "crc32c", {}, {3, 4}};
  const char* names[] = {"checksum_errors",  "bitmap_syncs",    "table_dirty", "table_loads",
                         "table_writebacks", "table_evictions", "table_errors"};
  uint64_t value = 100;
  for (const char* name : names)
    integrity.counters.push_back({name, value++, std::string(name) != "table_dirty", "help"});
  v.integrity = integrity;
  report.volumes.push_back(v);
  MemberStatus m;
  m.volume = "safe";
  m.index = 1;
  m.uri = "nbd://node1/disk";
  m.state = "ready";
  m.fenced = true;
  m.epoch = 5;
  m.in_flight = 6;
  m.waiting = 8;
  m.counters.resends = 9;
  m.checksum_errors = 4;
  report.members.push_back(m);
  return report;
}

// "name=value" pairs of a stats line.
std::map<std::string, std::string> Pairs(const std::string& line) {
  std::map<std::string, std::string> out;
  std::istringstream in(line);
  std::string word;
  while (in >> word) {
    const size_t eq = word.find('=');
    REQUIRE_MESSAGE(eq != std::string::npos, word);
    out[word.substr(0, eq)] = word.substr(eq + 1);
  }
  return out;
}

bool Contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

TEST_CASE("every integrity counter: one name and one value in JSON, table, metrics, stats line") {
  const StatusReport report = SampleReport();
  const volume::IntegrityState& integrity = *report.volumes[0].integrity;
  const std::string json = StatusToJson(report);
  const std::string text = StatusToText(report);
  const std::string metrics = StatusToPrometheus(report);
  const std::string line = IntegrityStatsFields(integrity);
  INFO("json:\n" << json << "\ntext:\n" << text << "\nmetrics:\n" << metrics << "\nline: " << line);
  const auto pairs = Pairs(line);
  CHECK(pairs.at("state") == "dirty");
  CHECK(pairs.at("checksum") == "crc32c");
  CHECK(pairs.size() == integrity.counters.size() + 2);
  for (const volume::NamedCounter& c : integrity.counters) {
    const std::string name = c.name, value = std::to_string(c.value);
    CHECK(pairs.at(name) == value);
    CHECK(Contains(json, "\"" + name + "\": " + value));
    CHECK(Contains(text, " " + name + "=" + value));
    CHECK(Contains(metrics, "dst_volume_" + name + (c.monotonic ? "_total" : "") +
                                "{volume=\"safe\"} " + value + "\n"));
  }
  CHECK(Contains(text,
                 "\nVOLUME           INTEGRITY\nsafe             state=dirty checksum=crc32c "));
  CHECK_FALSE(Contains(json, "table_dirty_pages"));
}

TEST_CASE("every member counter: one name and one value in JSON, metrics and the stats line") {
  const StatusReport report = SampleReport();
  const MemberStatus& m = report.members[0];
  const std::string json = StatusToJson(report);
  const std::string metrics = StatusToPrometheus(report);
  const std::string line = MemberStatsFields(m);
  INFO("json:\n" << json << "\nmetrics:\n" << metrics << "\nline: " << line);
  const auto pairs = Pairs(line);
  CHECK(pairs.at("state") == "ready");
  CHECK(pairs.at("fenced") == "yes");
  const auto counters = MemberCounters(m);
  CHECK(pairs.size() == counters.size() + 2);
  const std::string labels = "{volume=\"safe\",member=\"1\",uri=\"nbd://node1/disk\"} ";
  for (const volume::NamedCounter& c : counters) {
    const std::string name = c.name, value = std::to_string(c.value);
    CHECK(pairs.at(name) == value);
    CHECK(Contains(json, "\"" + name + "\": " + value));
    CHECK(Contains(metrics,
                   "dst_member_" + name + (c.monotonic ? "_total" : "") + labels + value + "\n"));
  }
  CHECK(pairs.at("in_flight") == "6");
  CHECK(pairs.at("waiting") == "8");
  CHECK(pairs.at("checksum_errors") == "4");
}

TEST_CASE("clients by event loop: in JSON, the table's first line and one metric per loop") {
  StatusReport report = SampleReport();
  report.loop_clients = {1, 3, 0, 2};
  const std::string json = StatusToJson(report);
  const std::string text = StatusToText(report);
  const std::string metrics = StatusToPrometheus(report);
  INFO("json:\n" << json << "\ntext:\n" << text << "\nmetrics:\n" << metrics);
  CHECK(Contains(json, "\"loop_clients\": [1, 3, 0, 2],"));
  CHECK(text.rfind("uptime 42 s, clients by event loop: 1 3 0 2\n\n", 0) == 0);
  CHECK(Contains(metrics, "# TYPE dst_aggregator_loop_clients gauge\n"
                          "dst_aggregator_loop_clients{loop=\"0\"} 1\n"
                          "dst_aggregator_loop_clients{loop=\"1\"} 3\n"
                          "dst_aggregator_loop_clients{loop=\"2\"} 0\n"
                          "dst_aggregator_loop_clients{loop=\"3\"} 2\n"));
}

TEST_CASE("a raw volume has no integrity section") {
  StatusReport report = SampleReport();
  report.volumes[0].integrity.reset();
  const std::string text = StatusToText(report);
  CHECK_FALSE(Contains(text, "INTEGRITY"));
  CHECK(Contains(StatusToJson(report), "\"checksummed\": false"));
  CHECK_FALSE(Contains(StatusToJson(report), "\"integrity\""));
}

// A raid10 of four with set 1 degraded: slot 3 stale since event 17, slot 0 repaired twice.
StatusReport Raid10Report() {
  StatusReport report = SampleReport();
  volume::RedundancyState r;
  r.copies = 2;
  r.generation = "0123abcd-4567-4890-abcd-ef0123456789";
  r.set_health = {"UU", "U_"};
  r.slots = {{"nbd://a/x", "active", 0, 2, 0},
             {"nbd://b/x", "active", 0, 0, 5},
             {"nbd://c/x", "active", 0, 0, 0},
             {"", "stale", 17, 0, 1}};
  report.volumes[0].layout = "raid10";
  report.volumes[0].redundancy = r;
  return report;
}

TEST_CASE("a mirror or raid10 volume: set health, generation and every slot in every output") {
  const StatusReport report = Raid10Report();
  const std::string json = StatusToJson(report);
  const std::string text = StatusToText(report);
  const std::string metrics = StatusToPrometheus(report);
  INFO("json:\n" << json << "\ntext:\n" << text << "\nmetrics:\n" << metrics);
  CHECK(Contains(text,
                 "\nVOLUME           COPIES GENERATION SETS\n"
                 "safe                  2 0123abcd   [UU] [U_]\n"));
  CHECK(Contains(text,
                 "\nVOLUME           SLOT  SET STATE      STALE_SINCE REPAIRED FAILOVERS  URI\n"
                 "safe                0    0 active               -        2         0  "
                 "nbd://a/x\n"));
  CHECK(Contains(text,
                 "safe                3    1 stale               17        0         1  "
                 "(missing)\n"));
  CHECK(Contains(json,
                 "\"redundancy\": {\"copies\": 2, \"generation\": "
                 "\"0123abcd-4567-4890-abcd-ef0123456789\", \"sets\": [\"UU\", \"U_\"], "
                 "\"slots\": [{\"slot\": 0, \"uri\": \"nbd://a/x\", \"state\": \"active\", "
                 "\"stale_since\": 0, \"repaired_blocks\": 2, \"read_failovers\": 0, "
                 "\"write_mostly\": false}"));
  CHECK(Contains(json,
                 "{\"slot\": 3, \"uri\": \"\", \"state\": \"stale\", \"stale_since\": 17, "
                 "\"repaired_blocks\": 0, \"read_failovers\": 1, \"write_mostly\": false}]}"));
  CHECK(Contains(metrics, "dst_set_current_copies{volume=\"safe\",set=\"1\"} 1\n"));
  CHECK(Contains(metrics, "dst_slot_current{volume=\"safe\",slot=\"3\",uri=\"\"} 0\n"));
  CHECK(Contains(
      metrics, "dst_slot_repaired_blocks_total{volume=\"safe\",slot=\"0\",uri=\"nbd://a/x\"} 2\n"));
  CHECK(Contains(metrics, "dst_slot_stale_since{volume=\"safe\",slot=\"3\",uri=\"\"} 17\n"));
  CHECK(Contains(
      metrics, "dst_slot_read_failovers_total{volume=\"safe\",slot=\"1\",uri=\"nbd://b/x\"} 5\n"));
  CHECK(RedundancyStatsFields(*report.volumes[0].redundancy) ==
        "generation=0123abcd sets=[UU][U_]");
  CHECK(SlotStatsFields(report.volumes[0].redundancy->slots[3]) ==
        "state=stale stale_since=17 repaired_blocks=0 read_failovers=1");
}

TEST_CASE("background jobs and rate limits: in the table, JSON and metrics") {
  StatusReport report = SampleReport();
  report.volumes[0].rate_min = 1 << 20;
  report.volumes[0].rate_max = 200 << 20;
  report.volumes[0].jobs = {
      {"scrub", "scrubbing safe", "running", "repair, 1 errors", 256 << 10, 1 << 20, 1 << 20, 1},
      {"scrub", "scrubbing other", "paused", "check, 0 errors", 0, 4096, 0, std::nullopt}};
  const std::string json = StatusToJson(report);
  const std::string text = StatusToText(report);
  const std::string metrics = StatusToPrometheus(report);
  INFO("json:\n" << json << "\ntext:\n" << text << "\nmetrics:\n" << metrics);
  CHECK(
      Contains(text,
               "\nVOLUME           BACKGROUND\n"
               "safe             rate 1 MiB/s to 200 MiB/s\n"
               "safe             scrub running scrubbing safe: 25% (256 KiB of 1 MiB) at 1 MiB/s, "
               "ETA 1 s (repair, 1 errors)\n"
               "safe             scrub paused scrubbing other: 0% (0 B of 4 KiB) at - "
               "(check, 0 errors)\n"));
  CHECK(Contains(json,
                 "\"background\": {\"rate_min_bytes\": 1048576, \"rate_max_bytes\": 209715200, "
                 "\"jobs\": [{\"kind\": \"scrub\", \"what\": \"scrubbing safe\", \"state\": "
                 "\"running\", \"detail\": \"repair, 1 errors\", \"done_bytes\": 262144, "
                 "\"total_bytes\": 1048576, \"bytes_per_second\": 1048576, \"eta_seconds\": 1}, "));
  CHECK(Contains(json, "\"eta_seconds\": null}]}"));
  CHECK(Contains(metrics, "dst_volume_background_rate_min_bytes{volume=\"safe\"} 1048576\n"));
  CHECK(Contains(metrics, "dst_volume_background_rate_max_bytes{volume=\"safe\"} 209715200\n"));
  const std::string job = "{volume=\"safe\",kind=\"scrub\",what=\"scrubbing safe\"} ";
  CHECK(Contains(metrics, "dst_job_running" + job + "1\n"));
  CHECK(Contains(metrics, "dst_job_done_bytes" + job + "262144\n"));
  CHECK(Contains(metrics, "dst_job_total_bytes" + job + "1048576\n"));
  CHECK(Contains(metrics, "dst_job_eta_seconds" + job + "1\n"));
  CHECK(Contains(metrics,
                 "dst_job_paused{volume=\"safe\",kind=\"scrub\",what=\"scrubbing other\"} 1\n"));
}

TEST_CASE("a linear or stripe volume shows no redundancy") {
  const StatusReport report = SampleReport();
  CHECK_FALSE(Contains(StatusToText(report), "GENERATION"));
  CHECK_FALSE(Contains(StatusToJson(report), "\"redundancy\""));
  CHECK_FALSE(Contains(StatusToPrometheus(report), "dst_slot_"));
}

TEST_CASE("a volume served through a staging log: its log's numbers in JSON, table and metrics") {
  StatusReport report = SampleReport();
  CHECK_FALSE(Contains(StatusToJson(report), "staging_log"));
  report.volumes[0].staging_log = volume::StagingLogState{
      "/var/lib/dst/safe.log", "log_full", 61440, 65536, 17, 12, 20480, 1500};
  CHECK(Contains(StatusToJson(report),
                 "\"staging_log\": {\"path\": \"/var/lib/dst/safe.log\", \"state\": \"log_full\", "
                 "\"mode\": \"write-back\", \"used_bytes\": 61440, \"ring_size\": 65536, "
                 "\"head_sequence\": 17, "
                 "\"destaged_sequence\": 12, \"pending_bytes\": 20480, \"pending_age_ms\": 1500}"));
  CHECK(Contains(StatusToText(report),
                 "VOLUME           STAGING LOG\nsafe             /var/lib/dst/safe.log "
                 "state=log_full mode=write-back used_bytes=61440 ring_size=65536 head_sequence=17 "
                 "destaged_sequence=12 pending_bytes=20480 pending_age_ms=1500\n"));
  const std::string metrics = StatusToPrometheus(report);
  CHECK(Contains(metrics, "dst_volume_staging_log_full{volume=\"safe\"} 1\n"));
  CHECK(Contains(metrics, "dst_volume_staging_log_destaged_sequence{volume=\"safe\"} 12\n"));
  CHECK(Contains(metrics, "# TYPE dst_volume_staging_log_pending_bytes gauge\n"));
  CHECK(Contains(metrics, "dst_volume_staging_log_write_through{volume=\"safe\"} 0\n"));
}

}  // namespace
}  // namespace dst::control::status_report_test
