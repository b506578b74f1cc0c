#include "nbdkit-plugin/fence_table.h"

#include <atomic>
#include <cerrno>
#include <chrono>
#include <future>
#include <thread>
#include <vector>

#include <doctest/doctest.h>

using dst::Status;
using dst::plugin::FencedName;
using dst::plugin::FenceTable;
using dst::plugin::MutationGuard;
using dst::plugin::ParseFencedName;
using std::chrono::milliseconds;

namespace {

constexpr const char* kSessionA = "0123456789abcdef0123456789abcdef";
constexpr const char* kSessionB = "fedcba9876543210fedcba9876543210";
// Long enough that a join that should wait does not give up by itself
// during a test, short enough that a bug fails the test instead of hanging it.
constexpr milliseconds kLongWait{10000};
// How long a join that must wait is watched not to return.
constexpr milliseconds kStillWaiting{150};

FencedName Parse(const std::string& name) {
  FencedName out;
  const Status s = ParseFencedName(name, &out);
  REQUIRE_MESSAGE(s.ok(), s.message());
  return out;
}

std::string ParseError(const std::string& name) {
  FencedName out;
  const Status s = ParseFencedName(name, &out);
  CHECK(s.err() == EINVAL);
  return s.message();
}

// Joins in a thread of its own, so that a test can watch it wait.
std::future<Status> JoinAsync(FenceTable& table, const char* session, uint64_t epoch,
                              FenceTable::Ticket* ticket, milliseconds wait = kLongWait) {
  return std::async(std::launch::async, [&table, session, epoch, ticket, wait] {
    return table.Join("vol0", session, epoch, wait, ticket);
  });
}

// Waits (bounded) until a session's current epoch is `epoch`.
bool WaitForEpoch(const FenceTable& table, const char* session, uint64_t epoch) {
  const auto deadline = std::chrono::steady_clock::now() + kLongWait;
  while (table.CurrentEpoch("vol0", session) != epoch) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(milliseconds(1));
  }
  return true;
}

bool Ready(std::future<Status>& f, milliseconds within) {
  return f.wait_for(within) == std::future_status::ready;
}

}  // namespace

TEST_CASE("fenced names: NAME@dst-fence:SESSION:EPOCH") {
  const FencedName f = Parse(std::string("vol0@dst-fence:") + kSessionA + ":42");
  CHECK(f.fenced);
  CHECK(f.name == "vol0");
  CHECK(f.session == kSessionA);
  CHECK(f.epoch == 42);
  CHECK(dst::plugin::FenceConfirmation(f) == std::string("dst-fence ") + kSessionA + " 42");

  SUBCASE("no marker: the whole name, unfenced") {
    const FencedName plain = Parse("vol0@dst-fence");
    CHECK_FALSE(plain.fenced);
    CHECK(plain.name == "vol0@dst-fence");
    CHECK(Parse("").name.empty());
  }
  SUBCASE("empty NAME is the default export") {
    const FencedName d = Parse(std::string("@dst-fence:") + kSessionB + ":1");
    CHECK(d.fenced);
    CHECK(d.name.empty());
    CHECK(d.epoch == 1);
  }
  SUBCASE("the last marker counts") {
    const FencedName twice =
        Parse(std::string("a@dst-fence:") + kSessionB + ":7@dst-fence:" + kSessionA + ":9");
    CHECK(twice.name == std::string("a@dst-fence:") + kSessionB + ":7");
    CHECK(twice.session == kSessionA);
    CHECK(twice.epoch == 9);
    CHECK(ParseError(std::string("a@dst-fence:") + kSessionA + ":1@dst-fence:") ==
          "fence suffix of 0 characters: expected SESSION:EPOCH after @dst-fence:");
  }
  SUBCASE("epoch bounds, and the epoch echoed as written") {
    CHECK(Parse(std::string("v@dst-fence:") + kSessionA + ":9223372036854775807").epoch ==
          9223372036854775807ull);
    const FencedName padded = Parse(std::string("v@dst-fence:") + kSessionA + ":007");
    CHECK(padded.epoch == 7);
    CHECK(dst::plugin::FenceConfirmation(padded) == std::string("dst-fence ") + kSessionA + " 007");
  }
}

TEST_CASE("malformed fence suffixes are EINVAL naming the bad part, but never a session") {
  const std::string prefix = "vol0@dst-fence:";
  CHECK(ParseError(prefix + kSessionA) ==
        "fence suffix of 32 characters: expected SESSION:EPOCH after @dst-fence:");
  CHECK(ParseError(prefix + "0123:1") ==
        "fence session of 4 characters: expected 32 lowercase hex characters");
  // A session with one wrong character is still (nearly) a session.
  CHECK(ParseError(prefix + "0123456789ABCDEF0123456789abcdef:1") ==
        "fence session of 32 characters: expected 32 lowercase hex characters");
  CHECK(ParseError(prefix + "0123456789abcdef0123456789abcdeg:1").find("fence session of 32") == 0);
  CHECK(ParseError(prefix + ":1").find("fence session of 0 characters") == 0);
  const std::string epoch_error = "': expected a decimal integer from 1 to 2^63-1";
  for (const char* bad :
       {"0", "", "-1", "+1", "1x", " 1", "1:2", "9223372036854775808", "99999999999999999999999"}) {
    CAPTURE(bad);
    CHECK(ParseError(prefix + kSessionA + ":" + bad) ==
          std::string("fence epoch '") + bad + epoch_error);
  }
}

TEST_CASE("an older epoch is refused with ESTALE, the same epoch joins") {
  FenceTable table;
  FenceTable::Ticket five, five_again, three;
  REQUIRE(table.Join("vol0", kSessionA, 5, kLongWait, &five).ok());
  CHECK(five.valid());
  CHECK(five.epoch() == 5);
  CHECK(five.previous_epoch() == 0);
  const Status stale = table.Join("vol0", kSessionA, 3, kLongWait, &three);
  CHECK(stale.err() == ESTALE);
  CHECK(stale.message() ==
        "export 'vol0': fence: session #2788636b: epoch 3 is older than current epoch 5");
  CHECK_FALSE(three.valid());
  REQUIRE(table.Join("vol0", kSessionA, 5, kLongWait, &five_again).ok());
  CHECK(five_again.previous_epoch() == 5);
  CHECK(table.BeginMutation(five));
  CHECK(table.BeginMutation(five_again));
  table.EndMutation(five);
  table.EndMutation(five_again);
  table.Leave(&five);
  CHECK_FALSE(five.valid());
  table.Leave(&five_again);
  // The epoch outlives the connections.
  CHECK(table.CurrentEpoch("vol0", kSessionA) == 5u);
  CHECK(table.Join("vol0", kSessionA, 4, kLongWait, &three).err() == ESTALE);
}

TEST_CASE("epoch 0 is not a valid epoch") {
  FenceTable table;
  FenceTable::Ticket t;
  CHECK(table.Join("vol0", kSessionA, 0, kLongWait, &t).err() == EINVAL);
  CHECK(table.session_count() == 0);
}

TEST_CASE("a stale ticket's mutations are refused once a newer epoch joined") {
  FenceTable table;
  FenceTable::Ticket one, two;
  REQUIRE(table.Join("vol0", kSessionA, 1, kLongWait, &one).ok());
  {
    MutationGuard before(table, one);
    CHECK(before.admitted());
  }
  REQUIRE(table.Join("vol0", kSessionA, 2, kLongWait, &two).ok());
  CHECK(two.previous_epoch() == 1);
  MutationGuard stale(table, one);
  CHECK_FALSE(stale.admitted());
  CHECK(stale.current_epoch() == 2);
  MutationGuard current(table, two);
  CHECK(current.admitted());
  table.Leave(&one);
  table.Leave(&two);
}

TEST_CASE("an unfenced connection (invalid ticket) is always admitted and never counted") {
  FenceTable table;
  const FenceTable::Ticket none;
  MutationGuard guard(table, none);
  CHECK(guard.admitted());
  FenceTable::Ticket t;
  // A running unfenced request does not delay a fenced join.
  CHECK(table.Join("vol0", kSessionA, 1, milliseconds(0), &t).ok());
  table.Leave(&t);
}

TEST_CASE("a newer epoch waits for the running mutations of older epochs") {
  FenceTable table;
  FenceTable::Ticket one, two;
  REQUIRE(table.Join("vol0", kSessionA, 1, kLongWait, &one).ok());
  REQUIRE(table.BeginMutation(one));  // a write of epoch 1 past its fence check
  auto join = JoinAsync(table, kSessionA, 2, &two);
  // The epoch is raised at once: epoch 1 cannot start anything new meanwhile.
  REQUIRE(WaitForEpoch(table, kSessionA, 2));
  CHECK_FALSE(Ready(join, kStillWaiting));
  CHECK_FALSE(table.BeginMutation(one));
  table.EndMutation(one);
  REQUIRE(Ready(join, kLongWait));
  const Status s = join.get();
  CHECK_MESSAGE(s.ok(), s.message());
  CHECK(two.waited() >= kStillWaiting);
  table.Leave(&one);
  table.Leave(&two);
}

TEST_CASE("a join of the current epoch also waits for older mutations") {
  FenceTable table;
  FenceTable::Ticket one, two_first, two_second;
  REQUIRE(table.Join("vol0", kSessionA, 1, kLongWait, &one).ok());
  REQUIRE(table.BeginMutation(one));
  auto first = JoinAsync(table, kSessionA, 2, &two_first);
  CHECK_FALSE(Ready(first, kStillWaiting));
  auto second = JoinAsync(table, kSessionA, 2, &two_second);
  CHECK_FALSE(Ready(second, kStillWaiting));
  table.EndMutation(one);
  REQUIRE(Ready(first, kLongWait));
  REQUIRE(Ready(second, kLongWait));
  CHECK(first.get().ok());
  CHECK(second.get().ok());
  table.Leave(&one);
  table.Leave(&two_first);
  table.Leave(&two_second);
}

TEST_CASE("a join that waits too long fails with ETIMEDOUT and the epoch stays raised") {
  FenceTable table;
  FenceTable::Ticket one, two;
  REQUIRE(table.Join("vol0", kSessionA, 1, kLongWait, &one).ok());
  REQUIRE(table.BeginMutation(one));
  const Status s = table.Join("vol0", kSessionA, 2, milliseconds(50), &two);
  CHECK(s.err() == ETIMEDOUT);
  CHECK(s.message() ==
        "export 'vol0': fence: session #2788636b: epoch 2: 1 write request(s) of older epochs "
        "still running after 50 ms");
  CHECK_FALSE(two.valid());
  CHECK(table.CurrentEpoch("vol0", kSessionA) == 2u);
  CHECK_FALSE(table.BeginMutation(one));
  table.EndMutation(one);
  // Once the old write is done, epoch 2 can join; epoch 1 no longer can.
  CHECK(table.Join("vol0", kSessionA, 2, milliseconds(0), &two).ok());
  FenceTable::Ticket late;
  CHECK(table.Join("vol0", kSessionA, 1, kLongWait, &late).err() == ESTALE);
  table.Leave(&one);
  table.Leave(&two);
}

TEST_CASE("a waiting join superseded by a newer epoch is refused with ESTALE") {
  FenceTable table;
  FenceTable::Ticket one, two, three;
  REQUIRE(table.Join("vol0", kSessionA, 1, kLongWait, &one).ok());
  REQUIRE(table.BeginMutation(one));
  auto join2 = JoinAsync(table, kSessionA, 2, &two);
  REQUIRE(WaitForEpoch(table, kSessionA, 2));  // join2 is in, and waiting
  CHECK_FALSE(Ready(join2, kStillWaiting));
  auto join3 = JoinAsync(table, kSessionA, 3, &three);
  REQUIRE(Ready(join2, kLongWait));  // woken by epoch 3, without waiting for the write
  const Status s2 = join2.get();
  CHECK(s2.err() == ESTALE);
  CHECK(s2.message().find("epoch 2 was superseded by epoch 3") != std::string::npos);
  CHECK_FALSE(two.valid());
  CHECK_FALSE(Ready(join3, milliseconds(0)));
  table.EndMutation(one);
  REQUIRE(Ready(join3, kLongWait));
  CHECK(join3.get().ok());
  table.Leave(&one);
  table.Leave(&three);
}

TEST_CASE("no mutation of an older epoch runs once a newer join has returned") {
  FenceTable table;
  FenceTable::Ticket one, two;
  REQUIRE(table.Join("vol0", kSessionA, 1, kLongWait, &one).ok());
  std::atomic<int> old_running{0};
  std::atomic<bool> stop{false};
  std::atomic<int> violations{0};
  std::atomic<bool> joined{false};
  std::vector<std::thread> writers;
  for (int i = 0; i < 8; ++i) {
    writers.emplace_back([&] {
      while (!stop) {
        MutationGuard guard(table, one);
        if (!guard.admitted()) continue;
        ++old_running;
        if (joined) ++violations;  // an epoch-1 write overlapping epoch 2
        std::this_thread::yield();
        --old_running;
      }
    });
  }
  std::this_thread::sleep_for(milliseconds(20));
  const Status s = table.Join("vol0", kSessionA, 2, kLongWait, &two);
  joined = true;
  const int running_after_join = old_running;
  std::this_thread::sleep_for(milliseconds(20));
  stop = true;
  for (auto& t : writers)
    t.join();
  CHECK_MESSAGE(s.ok(), s.message());
  CHECK(running_after_join == 0);
  CHECK(violations == 0);
  table.Leave(&one);
  table.Leave(&two);
}

TEST_CASE("sessions and exports are fenced independently") {
  FenceTable table;
  FenceTable::Ticket a5, b1, other_export, a1;
  REQUIRE(table.Join("vol0", kSessionA, 5, kLongWait, &a5).ok());
  REQUIRE(table.BeginMutation(a5));
  // Another session, and the same session on another export, neither wait
  // for session A's write nor care about its epoch.
  CHECK(table.Join("vol0", kSessionB, 1, milliseconds(0), &b1).ok());
  CHECK(table.Join("vol1", kSessionA, 1, milliseconds(0), &other_export).ok());
  CHECK(table.BeginMutation(b1));
  table.EndMutation(b1);
  CHECK(table.Join("vol0", kSessionA, 1, kLongWait, &a1).err() == ESTALE);
  table.EndMutation(a5);
  CHECK(table.session_count() == 3);
  for (auto* t : {&a5, &b1, &other_export})
    table.Leave(t);
}

TEST_CASE("the table is bounded by evicting idle sessions, oldest first") {
  FenceTable table(3);
  const char* sessions[] = {"00000000000000000000000000000001", "00000000000000000000000000000002",
                            "00000000000000000000000000000003", "00000000000000000000000000000004",
                            "00000000000000000000000000000005"};
  FenceTable::Ticket t[5];
  for (int i = 0; i < 3; ++i) {
    REQUIRE(table.Join("vol0", sessions[i], 7, kLongWait, &t[i]).ok());
    table.Leave(&t[i]);
  }
  CHECK(table.session_count() == 3);
  // Session 0 is used again, so session 1 is now the one used longest ago.
  REQUIRE(table.Join("vol0", sessions[0], 7, kLongWait, &t[0]).ok());
  table.Leave(&t[0]);
  REQUIRE(table.Join("vol0", sessions[3], 1, kLongWait, &t[3]).ok());
  CHECK(table.session_count() == 3);
  CHECK_FALSE(table.CurrentEpoch("vol0", sessions[1]).has_value());
  CHECK(table.CurrentEpoch("vol0", sessions[0]) == 7u);
  CHECK(table.CurrentEpoch("vol0", sessions[2]) == 7u);

  SUBCASE("sessions with connections are kept beyond the bound") {
    REQUIRE(table.Join("vol0", sessions[0], 7, kLongWait, &t[0]).ok());
    REQUIRE(table.Join("vol0", sessions[2], 7, kLongWait, &t[2]).ok());
    REQUIRE(table.Join("vol0", sessions[4], 1, kLongWait, &t[4]).ok());
    CHECK(table.session_count() == 4);
    CHECK(table.CurrentEpoch("vol0", sessions[0]) == 7u);
    CHECK(table.CurrentEpoch("vol0", sessions[2]) == 7u);
    // Back within the bound as soon as a session goes idle.
    table.Leave(&t[3]);
    CHECK(table.session_count() == 3);
    CHECK_FALSE(table.CurrentEpoch("vol0", sessions[3]).has_value());
    for (int i : {0, 2, 4})
      table.Leave(&t[i]);
  }
  SUBCASE("an evicted session starts afresh") {
    table.Leave(&t[3]);
    REQUIRE(table.Join("vol0", sessions[1], 1, kLongWait, &t[1]).ok());
    CHECK(t[1].previous_epoch() == 0);
    table.Leave(&t[1]);
  }
}

namespace {

// A clock that moves only when the test says so.
struct ManualClock {
  std::chrono::steady_clock::time_point now{std::chrono::hours(1)};
  FenceTable::Clock Get() {
    return [this] { return now; };
  }
};

}  // namespace

TEST_CASE("session ids are fingerprinted and redacted, never shown") {
  // BLAKE2b-256 of the id, as `printf %s ID | b2sum -l 256 | cut -c1-8` gives.
  CHECK(dst::plugin::SessionFingerprint(kSessionA) == "#2788636b");
  CHECK(dst::plugin::SessionFingerprint(kSessionB) != "#2788636b");
  using dst::plugin::RedactedExportName;
  CHECK(RedactedExportName(std::string("vol0@dst-fence:") + kSessionA + ":7") ==
        "vol0@dst-fence:<redacted>");
  CHECK(RedactedExportName(std::string("@dst-fence:") + kSessionA) == "@dst-fence:<redacted>");
  CHECK(RedactedExportName("vol0") == "vol0");
  CHECK(RedactedExportName("vol0@dst-fence") == "vol0@dst-fence");
  FenceTable table;
  FenceTable::Ticket t;
  const Status zero = table.Join("vol0", kSessionA, 0, kLongWait, &t);
  CHECK(zero.message() == "export 'vol0': fence: session #2788636b: epoch 0 is not valid");
}

TEST_CASE("the epoch bound: 2^20 above current, plus 2^10 per second since it rose") {
  using std::chrono::seconds;
  CHECK(FenceTable::MaxEpochJump(seconds(0)) == 1048576u);
  CHECK(FenceTable::MaxEpochJump(milliseconds(999)) == 1048576u);
  CHECK(FenceTable::MaxEpochJump(seconds(1)) == 1048576u + 1024u);
  CHECK(FenceTable::MaxEpochJump(seconds(-5)) == 1048576u);  // a clock that went back
  // Ten reconnect attempts a second for a year stay far inside it.
  CHECK(FenceTable::MaxEpochJump(std::chrono::hours(24 * 365)) > 10u * 3600u * 24u * 365u);
  // The longest duration the clock can express does not overflow the sum.
  CHECK(FenceTable::MaxEpochJump(std::chrono::steady_clock::duration::max()) >
        FenceTable::MaxEpochJump(std::chrono::hours(24 * 365)));
}

TEST_CASE("a join too far above the current epoch is refused with ERANGE and changes nothing") {
  ManualClock clock;
  FenceTable table(FenceTable::kDefaultMaxSessions, clock.Get());
  FenceTable::Ticket writer, huge, edge, later;
  REQUIRE(table.Join("vol0", kSessionA, 5, kLongWait, &writer).ok());

  // The audit's attack: one open at 2^63-1 would have locked the session.
  const Status s = table.Join("vol0", kSessionA, 9223372036854775807ull, kLongWait, &huge);
  CHECK(s.err() == ERANGE);
  CHECK(s.message() ==
        "export 'vol0': fence: session #2788636b: epoch 9223372036854775807 is more than 1048576 "
        "above current epoch 5");
  CHECK_FALSE(huge.valid());
  CHECK(table.CurrentEpoch("vol0", kSessionA) == 5u);
  CHECK(table.BeginMutation(writer));  // the writer keeps writing
  table.EndMutation(writer);
  CHECK(table.Join("vol0", kSessionA, 5 + 1048577, kLongWait, &huge).err() == ERANGE);

  SUBCASE("exactly the bound is allowed") {
    REQUIRE(table.Join("vol0", kSessionA, 5 + 1048576, kLongWait, &edge).ok());
    CHECK_FALSE(table.BeginMutation(writer));
    // The bound counts from the new current epoch, and its time from now.
    CHECK(table.Join("vol0", kSessionA, 5 + 2 * 1048576 + 1, kLongWait, &later).err() == ERANGE);
    table.Leave(&edge);
  }
  SUBCASE("the bound grows while the epoch stays where it is") {
    clock.now += std::chrono::seconds(100);
    REQUIRE(table.Join("vol0", kSessionA, 5 + 1048576 + 100 * 1024, kLongWait, &later).ok());
    CHECK(table.CurrentEpoch("vol0", kSessionA) == 5u + 1048576u + 102400u);
    table.Leave(&later);
  }
  SUBCASE("a session new to the table takes any epoch") {
    REQUIRE(table.Join("vol0", kSessionB, 9223372036854775807ull, kLongWait, &later).ok());
    table.Leave(&later);
  }
  table.Leave(&writer);
}

namespace {

std::string NumberedSession(int i) {
  std::string hex = std::to_string(i);
  return std::string(32 - hex.size(), '0') + hex;
}

}  // namespace

TEST_CASE("many sessions with connections beyond the bound: joins and leaves stay cheap") {
  // The audit's suspicion: once the bound was exceeded by sessions with
  // connections, every join and leave scanned the whole table under the
  // table's lock. Idle sessions now wait in a list in the order they went
  // idle, and eviction takes from its front.
  constexpr int kBound = 16;
  constexpr int kSessions = 20000;
  FenceTable table(kBound);
  std::vector<FenceTable::Ticket> tickets(kSessions);
  for (int i = 0; i < kSessions; ++i)
    REQUIRE(table.Join("vol0", NumberedSession(i), 1, kLongWait, &tickets[i]).ok());
  CHECK(table.session_count() == static_cast<size_t>(kSessions));  // none may go
  // Session 3 goes idle first, then comes back: it is no longer idle, and
  // goes idle again last.
  table.Leave(&tickets[3]);
  CHECK(table.session_count() == static_cast<size_t>(kSessions) - 1);  // forgotten at once
  REQUIRE(table.Join("vol0", NumberedSession(3), 9, kLongWait, &tickets[3]).ok());
  CHECK(tickets[3].previous_epoch() == 0);
  for (int i = 0; i < kSessions; ++i)
    if (i != 3) table.Leave(&tickets[i]);
  table.Leave(&tickets[3]);
  CHECK(table.session_count() == static_cast<size_t>(kBound));
  // Kept: the kBound that went idle last (3, and the last kBound - 1 others).
  CHECK(table.CurrentEpoch("vol0", NumberedSession(3)) == 9u);
  for (int i = kSessions - kBound + 1; i < kSessions; ++i)
    CHECK(table.CurrentEpoch("vol0", NumberedSession(i)) == 1u);
  CHECK_FALSE(table.CurrentEpoch("vol0", NumberedSession(0)).has_value());
  CHECK_FALSE(table.CurrentEpoch("vol0", NumberedSession(kSessions - kBound)).has_value());
}

TEST_CASE("a new owner's epoch is accepted however far its high half is above the current one") {
  constexpr uint64_t kOwner = uint64_t{1} << 32;
  CHECK(FenceTable::IsNewOwner(1 * kOwner + 7, 2 * kOwner + 1));
  CHECK(FenceTable::IsNewOwner(0, kOwner + 1));  // an unfenced-era session: epoch 1..2^20
  CHECK(FenceTable::IsNewOwner(3 * kOwner + 9, (3 + 65536) * kOwner + 1048576));
  CHECK_FALSE(FenceTable::IsNewOwner(3 * kOwner + 9, (3 + 65537) * kOwner + 1));  // too many owners
  CHECK_FALSE(FenceTable::IsNewOwner(3 * kOwner + 9, 4 * kOwner + 1048577));  // low half too high
  CHECK_FALSE(FenceTable::IsNewOwner(3 * kOwner + 9, 3 * kOwner + 1048576));  // the same owner
  CHECK_FALSE(FenceTable::IsNewOwner(3 * kOwner + 9, 2 * kOwner + 1));        // an older owner

  ManualClock clock;
  FenceTable table(FenceTable::kDefaultMaxSessions, clock.Get());
  FenceTable::Ticket first, second, stale, beyond;
  REQUIRE(table.Join("vol0", kSessionA, kOwner + 1, kLongWait, &first).ok());
  // The second aggregator's first epoch: 2^32 above, far beyond the time bound.
  REQUIRE(table.Join("vol0", kSessionA, 2 * kOwner + 1, kLongWait, &second).ok());
  CHECK(table.CurrentEpoch("vol0", kSessionA) == 2 * kOwner + 1);
  CHECK_FALSE(table.BeginMutation(first));  // the first owner is fenced out
  // Its reconnects stay out: their epochs are older.
  CHECK(table.Join("vol0", kSessionA, kOwner + 2, kLongWait, &stale).err() == ESTALE);
  // The rule needs a low half of a first attempt: a jump to a high attempt number is not an owner.
  const Status s =
      table.Join("vol0", kSessionA, 3 * kOwner + (uint64_t{1} << 30), kLongWait, &beyond);
  CHECK(s.err() == ERANGE);
  CHECK(table.CurrentEpoch("vol0", kSessionA) == 2 * kOwner + 1);
  // The new owner's own reconnects are ordinary raises within the bound.
  table.Leave(&second);
  REQUIRE(table.Join("vol0", kSessionA, 2 * kOwner + 2, kLongWait, &second).ok());
  table.Leave(&second);
  table.Leave(&first);
}
