#include "tests/fault/fault_fixture.h"

#include "tests/integration/volume_fixture.h"

#include <libnbd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace dst::test::fault {

NbdkitOptions PluginMemberOptions(const std::string& file, uint64_t size,
                                  std::vector<std::string> filters,
                                  std::vector<std::string> extra_args) {
  NbdkitOptions o = PluginOptions({"file=" + file, "size=" + std::to_string(size)});
  for (const std::string& f : filters)
    o.nbdkit_flags.push_back("--filter=" + f);
  o.args.insert(o.args.end(), extra_args.begin(), extra_args.end());
  return o;
}

Member::~Member() {
  Kill(SIGCONT);  // a member left stopped could not act on SIGTERM
  const int code = Stop();
  if (killed_) return;
  CHECK_MESSAGE(code == 0, "nbdkit exit code " << code << "\n" << stderr_text());
  CHECK_MESSAGE(SanitizerReports().empty(), "sanitizer reports in nbdkit's stderr:\n"
                                                << stderr_text());
}

void Member::KillHard() {
  killed_ = true;
  KillAndWait();
}

void Member::RestartAfterKill() {
  Restart();
  killed_ = false;
}

AggregatorOptions FaultAggregatorOptions(std::vector<std::string> args, AggregatorListen listen,
                                         std::vector<std::string> wrapper) {
  AggregatorOptions o;
  o.binary = DST_AGGREGATOR_PATH;
  o.args = std::move(args);
  o.listen = listen;
  o.wrapper = std::move(wrapper);
  return o;
}

Aggregator::~Aggregator() {
  const int code = Stop();
  // DST_FAULT_SHOW_LOGS=1 prints the log of passing cases too.
  if (const char* show = std::getenv("DST_FAULT_SHOW_LOGS"); show && *show == '1')
    std::fprintf(stderr, "---- dst-aggregator stderr ----\n%s----\n", stderr_text().c_str());
  CHECK_MESSAGE(code == 0, "dst-aggregator exit code " << code << "\n" << stderr_text());
  CHECK_MESSAGE(SanitizerReports().empty(), "sanitizer reports:\n" << stderr_text());
}

// ---------------------------------------------------------------------------
// Stats.

const std::string& MemberStats::Text(const std::string& key) const {
  auto it = values_.find(key);
  if (it == values_.end())
    throw std::runtime_error("stats line has no " + key + ": " +
                             (line_.empty() ? "<none>" : line_));
  return it->second;
}

uint64_t MemberStats::Count(const std::string& key) const {
  const std::string& text = Text(key);
  size_t used = 0;
  uint64_t value = 0;
  try {
    value = std::stoull(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != text.size() || text.empty())
    throw std::runtime_error("stats " + key + "=" + text + " is not a number: " + line_);
  return value;
}

namespace {

// "dst-aggregator: info: stats: volume VOL member IDX URI: state=... ..." or
// "dst-aggregator: info: stats: volume VOL integrity: state=... ...".
MemberStats ParseStatsLine(const std::string& line) {
  std::map<std::string, std::string> values;
  const size_t start = line.find(" state=");
  if (start == std::string::npos) throw std::runtime_error("not a stats line: " + line);
  std::istringstream fields(line.substr(start + 1));
  std::string field;
  while (fields >> field) {
    const size_t eq = field.find('=');
    if (eq == std::string::npos)
      throw std::runtime_error("bad stats field '" + field + "': " + line);
    values[field.substr(0, eq)] = field.substr(eq + 1);
  }
  return MemberStats(std::move(values), line);
}

std::string MemberMark(const std::string& volume, size_t index) {
  return "info: stats: volume " + volume + " member " + std::to_string(index) + " ";
}

}  // namespace

MemberStats QueryStatsLine(AggregatorServer& aggregator, const std::string& mark, Ms timeout) {
  const size_t before = CountOf(aggregator.stderr_text(), mark);
  aggregator.Kill(SIGUSR1);
  const auto deadline = SteadyClock::now() + timeout;
  for (;;) {
    const std::string log = aggregator.stderr_text();
    // The line is complete once its newline is there.
    const size_t at = log.rfind(mark);
    if (CountOf(log, mark) > before && at != std::string::npos) {
      const size_t end = log.find('\n', at);
      if (end != std::string::npos) {
        const size_t begin = log.rfind('\n', at);
        return ParseStatsLine(log.substr(begin == std::string::npos ? 0 : begin + 1,
                                         end - (begin == std::string::npos ? 0 : begin + 1)));
      }
    }
    if (SteadyClock::now() > deadline || !aggregator.Running())
      throw std::runtime_error("no stats line with '" + mark +
                               "' after SIGUSR1; aggregator stderr:\n" + log);
    std::this_thread::sleep_for(5ms);
  }
}

MemberStats WaitForStatsLine(AggregatorServer& aggregator, const std::string& mark,
                             const std::function<bool(const MemberStats&)>& done, Ms timeout,
                             Ms period) {
  const auto deadline = SteadyClock::now() + timeout;
  for (;;) {
    MemberStats stats = QueryStatsLine(aggregator, mark);
    if (done(stats)) return stats;
    if (SteadyClock::now() > deadline)
      throw std::runtime_error("stats line '" + mark +
                               "' did not get there in time; last: " + stats.line());
    std::this_thread::sleep_for(period);
  }
}

MemberStats QueryStats(AggregatorServer& aggregator, const std::string& volume, size_t index,
                       Ms timeout) {
  return QueryStatsLine(aggregator, MemberMark(volume, index), timeout);
}

MemberStats WaitForStats(AggregatorServer& aggregator, const std::string& volume, size_t index,
                         const std::function<bool(const MemberStats&)>& done, Ms timeout,
                         Ms period) {
  return WaitForStatsLine(aggregator, MemberMark(volume, index), done, timeout, period);
}

// ---------------------------------------------------------------------------
// Logs.

bool WaitForText(const std::function<std::string()>& text, std::string_view needle, Ms timeout) {
  const auto deadline = SteadyClock::now() + timeout;
  while (!Contains(text(), needle)) {
    if (SteadyClock::now() > deadline) return false;
    std::this_thread::sleep_for(10ms);
  }
  return true;
}

// ---------------------------------------------------------------------------
// Client I/O.

NbdStatus LastNbdError() {
  const int err = nbd_get_errno();
  const char* msg = nbd_get_error();
  return {err != 0 ? err : EIO, msg ? msg : "unknown libnbd error"};
}

NbdStatus AwaitCommand(NbdClient& client, int64_t cookie, Ms timeout) {
  const auto deadline = SteadyClock::now() + timeout;
  for (;;) {
    const int done = nbd_aio_command_completed(client.handle(), cookie);
    if (done == 1) return {};
    if (done == -1) return LastNbdError();
    if (SteadyClock::now() >= deadline)
      return {ETIME, "command did not complete within " + std::to_string(timeout.count()) + " ms"};
    if (nbd_poll(client.handle(), 50) == -1) return LastNbdError();
  }
}

NbdStatus AwaitAll(NbdClient& client, const std::vector<int64_t>& cookies, Ms timeout) {
  const auto deadline = SteadyClock::now() + timeout;
  NbdStatus first;
  for (const int64_t cookie : cookies) {
    const auto left =
        std::max(Ms(0), std::chrono::duration_cast<Ms>(deadline - SteadyClock::now()));
    const NbdStatus s = AwaitCommand(client, cookie, left);
    if (!s.ok() && first.ok()) first = s;
  }
  return first;
}

int InFlight(NbdClient& client) {
  nbd_poll(client.handle(), 0);
  return nbd_aio_in_flight(client.handle());
}

void PollFor(NbdClient& client, Ms duration) {
  const auto deadline = SteadyClock::now() + duration;
  for (;;) {
    const auto left = std::chrono::duration_cast<Ms>(deadline - SteadyClock::now());
    if (left.count() <= 0) return;
    if (nbd_poll(client.handle(), static_cast<int>(std::min<int64_t>(left.count(), 50))) == -1)
      return;
  }
}

int64_t SubmitWrite(NbdClient& client, std::span<const uint8_t> data, uint64_t offset) {
  const int64_t cookie =
      nbd_aio_pwrite(client.handle(), data.data(), data.size(), offset, NBD_NULL_COMPLETION, 0);
  if (cookie == -1) throw std::runtime_error("nbd_aio_pwrite: " + LastNbdError().ToString());
  return cookie;
}

int64_t SubmitRead(NbdClient& client, std::span<uint8_t> buffer, uint64_t offset) {
  const int64_t cookie =
      nbd_aio_pread(client.handle(), buffer.data(), buffer.size(), offset, NBD_NULL_COMPLETION, 0);
  if (cookie == -1) throw std::runtime_error("nbd_aio_pread: " + LastNbdError().ToString());
  return cookie;
}

int64_t SubmitFlush(NbdClient& client) {
  const int64_t cookie = nbd_aio_flush(client.handle(), NBD_NULL_COMPLETION, 0);
  if (cookie == -1) throw std::runtime_error("nbd_aio_flush: " + LastNbdError().ToString());
  return cookie;
}

NbdStatus WriteFor(NbdClient& client, std::span<const uint8_t> data, uint64_t offset, Ms timeout) {
  return AwaitCommand(client, SubmitWrite(client, data, offset), timeout);
}

NbdStatus ReadFor(NbdClient& client, std::span<uint8_t> buffer, uint64_t offset, Ms timeout) {
  return AwaitCommand(client, SubmitRead(client, buffer, offset), timeout);
}

NbdStatus FlushFor(NbdClient& client, Ms timeout) {
  return AwaitCommand(client, SubmitFlush(client), timeout);
}

double SecondsSince(SteadyClock::time_point start) {
  return std::chrono::duration<double>(SteadyClock::now() - start).count();
}

// ---------------------------------------------------------------------------
// Mirror and raid10 volumes.

std::string InspectGeneration(const std::string& uri) {
  const CommandResult r = RunAggregator({"inspect", "--json", uri});
  std::smatch g;
  if (r.exit_code != 0 ||
      !std::regex_search(r.stdout_text, g, std::regex("\"generation\": *\"([0-9a-f-]+)\"")))
    throw std::runtime_error("no generation in inspect --json " + uri + ": " + r.stdout_text +
                             r.stderr_text);
  return g[1];
}

std::string SlotState(size_t slot, const std::string& uri, const std::string& state) {
  return "{\"slot\": " + std::to_string(slot) + ", \"uri\": \"" + uri + "\", \"state\": \"" +
         state + "\"";
}

std::optional<double> WaitForStatus(const AggregatorServer& aggregator, const std::string& needle,
                                    Ms timeout) {
  const auto start = SteadyClock::now();
  while (!Contains(StatusJson(aggregator), needle)) {
    if (SteadyClock::now() - start > timeout) return std::nullopt;
    std::this_thread::sleep_for(20ms);
  }
  return SecondsSince(start);
}

// ---------------------------------------------------------------------------
// Stripe model.

void ForEachStripePiece(uint64_t offset, uint64_t length, uint64_t chunk, size_t members,
                        const std::function<void(size_t, uint64_t, uint64_t, uint64_t)>& f) {
  uint64_t done = 0;
  while (done < length) {
    const uint64_t volume_offset = offset + done;
    const uint64_t k = volume_offset / chunk;
    const uint64_t within = volume_offset % chunk;
    const uint64_t piece = std::min(chunk - within, length - done);
    f(k % members, (k / members) * chunk + within, done, piece);
    done += piece;
  }
}

void CheckStripeOnFiles(const std::vector<std::string>& files, uint64_t chunk, uint64_t offset,
                        const Bytes& data) {
  ForEachStripePiece(
      offset, data.size(), chunk, files.size(),
      [&](size_t m, uint64_t member_offset, uint64_t data_offset, uint64_t len) {
        const Bytes got = ReadFileRange(files[m], member_offset, len);
        const Bytes want(data.begin() + data_offset, data.begin() + data_offset + len);
        CHECK_MESSAGE(got == want, "member " << m << " " << files[m] << " at " << member_offset
                                             << " (" << len << " bytes) differs");
      });
}

bool OlderWriteAfterNewer(const std::string& log_file, uint64_t owner_epoch, bool* newer_seen) {
  std::ifstream in(log_file);
  std::stringstream text;
  text << in.rdbuf();
  const std::regex connect(
      "connection=([0-9]+) Connect export=\"[^\"]*@dst-fence:[0-9a-f]+:([0-9]+)\"");
  const std::regex done("connection=([0-9]+) \\.\\.\\.(Write|Trim|Zero) id=[0-9]+ return=0$");
  std::map<std::string, uint64_t> epochs;
  bool newer = false, older_after = false;
  std::string line;
  while (std::getline(text, line)) {
    std::smatch m;
    if (std::regex_search(line, m, connect)) {
      epochs[m[1]] = std::stoull(m[2]);
    } else if (std::regex_search(line, m, done)) {
      const uint64_t epoch = epochs.count(m[1]) ? epochs[m[1]] : 0;
      if (epoch >= owner_epoch)
        newer = true;
      else if (newer)
        older_after = true;
    }
  }
  *newer_seen = newer;
  return older_after;
}

}  // namespace dst::test::fault
