// Shared pieces of the fault-injection suites (ctest label `fault`): export
// nodes that can be killed, stopped and restarted, an aggregator that checks
// on teardown that it stopped cleanly, the member counters of its stats
// lines, and client I/O that is bounded in time, so that a hung member or
// aggregator fails a case instead of hanging the suite.
//
// Every helper that waits takes or has a bound; every process is stopped by
// the object that started it, also when a case fails half-way.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "tests/harness/aggregator_process.h"
#include "tests/integration/plugin_fixture.h"
#include "tests/integration/volume_fixture.h"

namespace dst::test::fault {

using namespace std::chrono_literals;
using Ms = std::chrono::milliseconds;
using SteadyClock = std::chrono::steady_clock;

// ---------------------------------------------------------------------------
// Export nodes.

// nbdkit serving our plugin on a file (so that data survives a kill and a
// restart), with optional filters in front: filters go to nbdkit_flags
// ("--filter=error"), their parameters after the plugin's.
NbdkitOptions PluginMemberOptions(const std::string& file, uint64_t size,
                                  std::vector<std::string> filters = {},
                                  std::vector<std::string> extra_args = {});

// An export node a test may kill, stop and restart. On teardown it is
// resumed if stopped, stopped with SIGTERM, and (unless the test killed it
// for good) must exit 0 with no sanitizer report.
class Member : public NbdkitServer {
 public:
  explicit Member(NbdkitOptions options) : NbdkitServer(std::move(options)) {}
  Member(const std::string& file, uint64_t size, std::vector<std::string> filters = {},
         std::vector<std::string> extra_args = {})
      : NbdkitServer(PluginMemberOptions(file, size, std::move(filters), std::move(extra_args))) {}
  ~Member();

  // SIGKILL, and waits (bounded) until the process is gone.
  void KillHard();
  // Starts it again on the same socket after KillHard().
  void RestartAfterKill();

 private:
  bool killed_ = false;
};

// ---------------------------------------------------------------------------
// The aggregator.

AggregatorOptions FaultAggregatorOptions(std::vector<std::string> args, AggregatorListen listen,
                                         std::vector<std::string> wrapper = {});

// dst-aggregator; on teardown checks that SIGTERM stopped it with exit code
// 0 and that no sanitizer reported anything meanwhile. With
// DST_FAULT_SHOW_LOGS=1 in the environment it also prints its log.
class Aggregator : public AggregatorServer {
 public:
  explicit Aggregator(std::vector<std::string> args,
                      AggregatorListen listen = AggregatorListen::kUnix,
                      std::vector<std::string> wrapper = {})
      : AggregatorServer(FaultAggregatorOptions(std::move(args), listen, std::move(wrapper))) {}
  ~Aggregator();
};

// One member's stats line as key=value pairs ("state" -> "ready",
// "reconnects" -> "1", ...).
class MemberStats {
 public:
  MemberStats() = default;
  explicit MemberStats(std::map<std::string, std::string> values, std::string line)
      : values_(std::move(values)), line_(std::move(line)) {}

  // Throws if the key is missing (or, for Count, not a number).
  const std::string& Text(const std::string& key) const;
  uint64_t Count(const std::string& key) const;
  const std::string& line() const { return line_; }

 private:
  std::map<std::string, std::string> values_;
  std::string line_;
};

// Sends SIGUSR1 and waits (bounded) for the next complete stats line that
// contains `mark` (e.g. "info: stats: volume VOL integrity: "); its
// key=value fields are those from "state=" on. Throws std::runtime_error if
// no such line comes.
MemberStats QueryStatsLine(AggregatorServer& aggregator, const std::string& mark, Ms timeout = 5s);

// Queries that stats line every `period` until `done(stats)` holds; returns
// the last stats, or throws std::runtime_error after `timeout`.
MemberStats WaitForStatsLine(AggregatorServer& aggregator, const std::string& mark,
                             const std::function<bool(const MemberStats&)>& done, Ms timeout,
                             Ms period = 50ms);

// QueryStatsLine for the stats line of member `index` of `volume`.
MemberStats QueryStats(AggregatorServer& aggregator, const std::string& volume, size_t index,
                       Ms timeout = 5s);

// WaitForStatsLine for the stats line of member `index` of `volume`.
MemberStats WaitForStats(AggregatorServer& aggregator, const std::string& volume, size_t index,
                         const std::function<bool(const MemberStats&)>& done, Ms timeout,
                         Ms period = 50ms);

// ---------------------------------------------------------------------------
// Logs.

// Polls `text()` until it contains `needle`; false after `timeout`.
bool WaitForText(const std::function<std::string()>& text, std::string_view needle, Ms timeout);

// ---------------------------------------------------------------------------
// Client I/O, every wait bounded.

// Waits for an asynchronous command; its status, or ETIME if it did not
// complete within `timeout`.
NbdStatus AwaitCommand(NbdClient& client, int64_t cookie, Ms timeout);
// Waits for all of them; the first error (in submission order), or ETIME.
NbdStatus AwaitAll(NbdClient& client, const std::vector<int64_t>& cookies, Ms timeout);
// Commands sent (or queued) and not yet answered, after letting libnbd
// process what has arrived.
int InFlight(NbdClient& client);
// Lets libnbd run for `duration` (sends and receives), then returns.
void PollFor(NbdClient& client, Ms duration);

// Submitters: the cookie, or throws with libnbd's error.
int64_t SubmitWrite(NbdClient& client, std::span<const uint8_t> data, uint64_t offset);
int64_t SubmitRead(NbdClient& client, std::span<uint8_t> buffer, uint64_t offset);
int64_t SubmitFlush(NbdClient& client);

NbdStatus WriteFor(NbdClient& client, std::span<const uint8_t> data, uint64_t offset,
                   Ms timeout = 20s);
NbdStatus ReadFor(NbdClient& client, std::span<uint8_t> buffer, uint64_t offset, Ms timeout = 20s);
NbdStatus FlushFor(NbdClient& client, Ms timeout = 20s);

// The last libnbd error of this thread as a status.
NbdStatus LastNbdError();

double SecondsSince(SteadyClock::time_point start);

// ---------------------------------------------------------------------------
// Mirror and raid10 volumes.

// The generation UUID in `inspect --json URI` of a member.
std::string InspectGeneration(const std::string& uri);
// The start of slot `slot`'s entry in status --json when its state is
// `state`: {"slot": 1, "uri": "URI", "state": "stale"
std::string SlotState(size_t slot, const std::string& uri, const std::string& state);
// Polls status --json until it contains `needle`; the seconds it took, or
// nullopt after `timeout`.
std::optional<double> WaitForStatus(const AggregatorServer& aggregator, const std::string& needle,
                                    Ms timeout);

// ---------------------------------------------------------------------------
// A stripe volume's bytes on its members (a model independent of
// aggregator/volume/): calls f(member, member_offset, data_offset, length)
// for every piece of [offset, offset + length).
void ForEachStripePiece(uint64_t offset, uint64_t length, uint64_t chunk, size_t members,
                        const std::function<void(size_t, uint64_t, uint64_t, uint64_t)>& f);

// Checks that the members' backing files hold `data` where a stripe volume
// puts volume range [offset, offset + data.size()).
void CheckStripeOnFiles(const std::vector<std::string>& files, uint64_t chunk, uint64_t offset,
                        const Bytes& data);

// From an nbdkit `log` filter file: whether a write, trim or zero of an epoch below `owner_epoch`
// succeeded after the first one of `owner_epoch` or above did. Each connection's epoch is the
// one its fenced export name carries; `newer_seen` says whether the newer owner wrote at all.
bool OlderWriteAfterNewer(const std::string& log_file, uint64_t owner_epoch, bool* newer_seen);

}  // namespace dst::test::fault
