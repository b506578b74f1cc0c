// The cluster catalog and volume ownership in etcd (docs/cluster.md), with a real etcd on
// loopback, real export nodes (our plugin under nbdkit) and real dst-aggregator processes
// standing for the hosts: exports registered in zones, a mirror placed and created on them, two
// aggregators racing for its lock, map --cluster finding its owner, etcd over TLS, volumes
// removed from the catalog (also a create's leftover), a takeover from
// an owner frozen past its lease (whose writes the export nodes then refuse), and etcd gone while a
// volume serves.
#include <csignal>
#include <fstream>
#include <future>
#include <map>
#include <regex>
#include <sstream>
#include <thread>

#include "tests/fault/fault_fixture.h"
#include "tests/harness/etcd_server.h"
#include "tests/harness/tls_credentials.h"
#include "tests/integration/volume_fixture.h"

namespace dst::test::fault::fault_cluster_test {
namespace {

constexpr uint64_t kBlock = 64 * kKiB;

// "volume mir: ownership epoch 2, owner ..." in an aggregator's log.
uint64_t ClaimedEpoch(const std::string& log) {
  std::smatch m;
  REQUIRE(std::regex_search(log, m, std::regex("volume mir: ownership epoch ([0-9]+), owner")));
  return std::stoull(m[1]);
}

// "volume mir: cluster owner HOST (pid P), lease L, lock revision N".
uint64_t LockRevision(const std::string& log) {
  std::smatch m;
  REQUIRE(
      std::regex_search(log, m, std::regex("volume mir: cluster owner .*lock revision ([0-9]+)")));
  return std::stoull(m[1]);
}

// An etcd and three export nodes, two in zone-a and one in zone-b, registered.
struct ClusterSetup {
  EtcdServer etcd;
  std::string url = etcd.url("dst");
  TempDir dir{"dst-fault-cluster"};
  Member a1{dir.File("a1.img"), 8 * kMiB, {"log"}, {"logfile=" + dir.File("a1.log")}};
  Member a2{dir.File("a2.img"), 16 * kMiB, {"log"}, {"logfile=" + dir.File("a2.log")}};
  Member b1{dir.File("b1.img"), 8 * kMiB, {"log"}, {"logfile=" + dir.File("b1.log")}};

  ClusterSetup() {
    for (auto [member, zone] : {std::pair{&a1, "zone-a"}, {&a2, "zone-a"}, {&b1, "zone-b"}}) {
      const CommandResult r =
          RunAggregator({"export", "add", member->uri(), "--zone", zone, "--cluster", url});
      REQUIRE_MESSAGE(r.exit_code == 0, r.stderr_text);
    }
  }

  // A mirror "mir" over a1 (the smaller of zone-a) and b1.
  void CreateMirror() {
    const CommandResult r = RunAggregator(
        {"create", "--cluster", url, "--name", "mir", "--layout", "mirror", "--copies", "2"});
    REQUIRE_MESSAGE(r.exit_code == 0, r.stderr_text);
  }

  AggregatorOptions Serve(std::vector<std::string> extra = {}) const {
    std::vector<std::string> args = {"--cluster", url, "--lease-ttl", "2"};
    args.insert(args.end(), extra.begin(), extra.end());
    args.push_back("mir");
    return FaultAggregatorOptions(args, AggregatorListen::kUnix);
  }
};

TEST_SUITE_BEGIN("fault_cluster");

TEST_CASE("exports in zones; create --cluster places a mirror on two zones and records it") {
  ClusterSetup c;
  CommandResult r =
      RunAggregator({"export", "add", c.a1.uri(), "--zone", "zone-b", "--cluster", c.url});
  CHECK(r.exit_code == 1);
  CHECK(Contains(r.stderr_text, "export " + c.a1.uri() + " is registered already (zone zone-a)"));

  // Larger than any export's data area: one line saying what is missing.
  r = RunAggregator(
      {"create", "--cluster", c.url, "--name", "big", "--layout", "mirror", "--size", "12M"});
  CHECK(r.exit_code == 1);
  CHECK(Contains(r.stderr_text,
                 "create --cluster: volume big: need 2 zones with a free export of at least 12 "
                 "MiB, have 1: zone-a (1 free)"));

  c.CreateMirror();
  r = RunAggregator({"export", "list", "--cluster", c.url});
  REQUIRE(r.exit_code == 0);
  CHECK(Contains(r.stdout_text, c.a1.uri() + " zone=zone-a size=8 MiB state=volume mir"));
  CHECK(Contains(r.stdout_text, c.a2.uri() + " zone=zone-a size=16 MiB state=free"));
  CHECK(Contains(r.stdout_text, c.b1.uri() + " zone=zone-b size=8 MiB state=volume mir"));
  // The members carry the volume, as create with their URIs would have made it.
  const std::string inspect = RunAggregator({"inspect", c.a1.uri()}).stdout_text;
  CHECK(Contains(inspect, "\"mir\""));

  // A second create of the name is refused as such (before placement, which finds no two free
  // zones now), and so it is with a new export in zone-b.
  r = RunAggregator({"create", "--cluster", c.url, "--name", "mir", "--layout", "mirror"});
  CHECK(r.exit_code == 1);
  CHECK(Contains(r.stderr_text, "volume mir exists in the catalog at " + c.url + "\n"));
  Member b2(c.dir.File("b2.img"), 8 * kMiB);
  REQUIRE(RunAggregator({"export", "add", b2.uri(), "--zone", "zone-b", "--cluster", c.url})
              .exit_code == 0);
  r = RunAggregator({"create", "--cluster", c.url, "--name", "mir", "--layout", "mirror"});
  CHECK(r.exit_code == 1);
  CHECK(Contains(r.stderr_text, "volume mir exists in the catalog at " + c.url));
  r = RunAggregator({"export", "list", "--cluster", c.url});
  CHECK(Contains(r.stdout_text, b2.uri() + " zone=zone-b size=8 MiB state=free"));

  // Drained exports are not placed.
  REQUIRE(RunAggregator({"export", "drain", b2.uri(), "--cluster", c.url}).exit_code == 0);
  r = RunAggregator({"create", "--cluster", c.url, "--name", "two", "--layout", "mirror"});
  CHECK(r.exit_code == 1);
  CHECK(Contains(r.stderr_text, "need 2 zones with a free export, have 1: zone-a (1 free)"));
  r = RunAggregator({"export", "list", "--cluster", c.url, "--json"});
  CHECK(Contains(r.stdout_text, "\"drained\": true"));
}

TEST_CASE("create --cluster --layout raid10: each set's copies in two zones, then served") {
  ClusterSetup c;
  Member b2(c.dir.File("b2.img"), 8 * kMiB);
  REQUIRE(RunAggregator({"export", "add", b2.uri(), "--zone", "zone-b", "--cluster", c.url})
              .exit_code == 0);
  CommandResult r = RunAggregator({"create", "--cluster", c.url, "--name", "r10", "--layout",
                                   "raid10", "--sets", "2", "--chunk", "64K"});
  REQUIRE_MESSAGE(r.exit_code == 0, r.stderr_text);
  // Member i is copy i % 2 of set i / 2: the two copies of each set are in different zones.
  const std::regex member_line("member ([0-3]): (\\S+) ");
  std::map<int, std::string> members;
  for (std::sregex_iterator it(r.stdout_text.begin(), r.stdout_text.end(), member_line), end;
       it != end; ++it)
    members[std::stoi((*it)[1])] = (*it)[2];
  REQUIRE(members.size() == 4);
  const std::map<std::string, std::string> zone = {
      {c.a1.uri(), "zone-a"}, {c.a2.uri(), "zone-a"}, {c.b1.uri(), "zone-b"}, {b2.uri(), "zone-b"}};
  CHECK(zone.at(members[0]) != zone.at(members[1]));
  CHECK(zone.at(members[2]) != zone.at(members[3]));
  r = RunAggregator({"status", "--cluster", c.url});
  CHECK_MESSAGE(Contains(r.stdout_text, "r10 layout=raid10 copies=2 "), r.stdout_text);
  CHECK(Contains(r.stdout_text,
                 "members=" + members[0] + "," + members[1] + "," + members[2] + "," + members[3]));
  r = RunAggregator({"export", "list", "--cluster", c.url});
  CHECK(CountOf(r.stdout_text, "state=volume r10") == 4);

  std::vector<std::string> args = {"--cluster", c.url, "r10"};
  Aggregator a(args);
  NbdClient client;
  REQUIRE_NBD_OK(client.Connect(a.uri("r10")));
  const Bytes data = RandomBytes(4 * kBlock, 5);
  REQUIRE(WriteFor(client, data, 0, 10s).ok());
  Bytes back(data.size());
  REQUIRE(ReadFor(client, back, 0, 10s).ok());
  CHECK(back == data);
  CHECK_NBD_OK(client.Shutdown());
}

TEST_CASE("two creates of one name at once: one wins, the other fails with one line") {
  ClusterSetup c;
  auto create = [&c] {
    return RunAggregator({"create", "--cluster", c.url, "--name", "mir", "--layout", "mirror"});
  };
  auto first = std::async(std::launch::async, create);
  auto second = std::async(std::launch::async, create);
  const CommandResult x = first.get();
  const CommandResult y = second.get();
  REQUIRE_MESSAGE(((x.exit_code == 0) != (y.exit_code == 0)), x.stderr_text << y.stderr_text);
  const CommandResult& loser = x.exit_code == 0 ? y : x;
  // The loser read the catalog after the winner's reservation (no free zone-b export left), or
  // before it, and then its transaction found the name taken or the exports changed. Either way
  // nothing of the loser's was formatted or recorded.
  const bool placed = Contains(loser.stderr_text, "need 2 zones with a free export, have 1");
  const bool exists = Contains(loser.stderr_text, "volume mir exists in the catalog");
  const bool changed = Contains(loser.stderr_text, "changed in the catalog meanwhile");
  CHECK_MESSAGE((placed || exists || changed), loser.stderr_text);
  CHECK(CountOf(loser.stderr_text, "error:") == 1);
  const CommandResult status = RunAggregator({"status", "--cluster", c.url});
  CHECK(CountOf(status.stdout_text, "mir layout=mirror copies=2 ") == 1);
  CHECK(Contains(status.stdout_text, "state=ready owner=none"));
}

TEST_CASE("two aggregators race to serve one volume: one wins, the other names the owner") {
  ClusterSetup c;
  c.CreateMirror();
  auto start = [&c]() -> std::pair<std::unique_ptr<AggregatorServer>, std::string> {
    try {
      return {std::make_unique<AggregatorServer>(c.Serve()), ""};
    } catch (const std::exception& e) {
      return {nullptr, e.what()};
    }
  };
  auto first = std::async(std::launch::async, start);
  auto second = std::async(std::launch::async, start);
  auto [x, x_error] = first.get();
  auto [y, y_error] = second.get();
  REQUIRE((x == nullptr) != (y == nullptr));
  AggregatorServer& owner = x ? *x : *y;
  const std::string& error = x ? y_error : x_error;
  const std::string owner_pid = std::to_string(owner.pid());
  CHECK_MESSAGE(Contains(error, "volume mir is owned by "), error);
  CHECK_MESSAGE(Contains(error, "(pid " + owner_pid + "): not serving it"), error);
  CHECK(Contains(owner.stderr_text(), "volume mir: cluster owner "));
  CommandResult status = RunAggregator({"status", "--cluster", c.url});
  REQUIRE(status.exit_code == 0);
  CHECK_MESSAGE(Contains(status.stdout_text, "mir layout=mirror copies=2 "), status.stdout_text);
  CHECK(Contains(status.stdout_text, "state=ready owner="));
  CHECK(Contains(status.stdout_text, "(pid " + owner_pid + ") members="));

  // An owner that renews its lease is not taken over: --takeover gives up after the owner's
  // lease TTL (2 s) and 5 s more.
  const auto asked = SteadyClock::now();
  const StartFailure kept = AggregatorServer::StartExpectingFailure(c.Serve({"--takeover"}));
  CHECK(SteadyClock::now() - asked >= 6s);
  CHECK_MESSAGE(Contains(kept.stderr_text, "volume mir is still owned by "), kept.stderr_text);
  CHECK(Contains(kept.stderr_text, "(pid " + owner_pid + "): its lease is being renewed"));

  NbdClient client;
  REQUIRE_NBD_OK(client.Connect(owner.uri("mir")));
  REQUIRE(WriteFor(client, RandomBytes(kBlock, 1), 0, 10s).ok());
  CHECK_NBD_OK(client.Shutdown());
  CHECK(owner.Stop() == 0);
  CHECK(owner.SanitizerReports().empty());
  // The clean stop revoked the lease: the volume is free at once.
  status = RunAggregator({"status", "--cluster", c.url, "--json"});
  CHECK(Contains(status.stdout_text, "\"owner\": null"));
  Aggregator next(c.Serve().args);
}

TEST_CASE("an owner frozen past its lease is taken over, and fenced once it runs again") {
  ClusterSetup c;
  c.CreateMirror();
  AggregatorServer a(c.Serve());
  NbdClient ca;
  REQUIRE_NBD_OK(ca.Connect(a.uri("mir")));
  const Bytes first = RandomBytes(kBlock, 1);
  REQUIRE(WriteFor(ca, first, 0, 10s).ok());
  REQUIRE(FlushFor(ca).ok());
  // Served only through the cluster, the volume's ownership epoch is its lock's revision.
  const uint64_t epoch_a = ClaimedEpoch(a.stderr_text());
  CHECK(epoch_a == LockRevision(a.stderr_text()));

  a.Kill(SIGSTOP);
  const auto stopped = SteadyClock::now();
  // Without --takeover the volume is refused while A's lease lasts.
  const StartFailure refused = AggregatorServer::StartExpectingFailure(c.Serve());
  CHECK(Contains(refused.stderr_text, "volume mir is owned by "));
  std::optional<Aggregator> b;
  b.emplace(c.Serve({"--takeover"}).args);
  // B waited for A's lease (2 s) to expire.
  CHECK(SteadyClock::now() - stopped >= 1500ms);
  CHECK(Contains(b->stderr_text(), "waiting up to"));
  const uint64_t epoch_b = ClaimedEpoch(b->stderr_text());
  CHECK(epoch_b == LockRevision(b->stderr_text()));
  CHECK(epoch_b > epoch_a);
  NbdClient cb;
  REQUIRE_NBD_OK(cb.Connect(b->uri("mir")));
  Bytes back(kBlock);
  REQUIRE(ReadFor(cb, back, 0, 10s).ok());
  CHECK(back == first);
  const Bytes second = RandomBytes(kBlock, 2);
  REQUIRE(WriteFor(cb, second, kBlock, 10s).ok());
  REQUIRE(FlushFor(cb).ok());

  // A runs again with a client write waiting in its socket: the write fails (the export nodes
  // refuse A's epoch if it gets there before A notices that its lease is gone), so do the ones
  // after it, and nothing of A's lands after B's first write.
  const Bytes stale = RandomBytes(kBlock, 3);
  auto waiting =
      std::async(std::launch::async, [&ca, &stale] { return WriteFor(ca, stale, kBlock, 10s); });
  std::this_thread::sleep_for(200ms);  // the request is in A's socket
  a.Kill(SIGCONT);
  CHECK_FALSE(waiting.get().ok());
  CHECK(WaitForText([&] { return a.stderr_text(); }, ": no more writes", 10s));
  CHECK(WriteFor(ca, RandomBytes(kBlock, 4), 2 * kBlock, 10s).err == EPERM);
  const bool lease_lost = Contains(a.stderr_text(), "cluster lease ");
  const bool fenced = Contains(a.stderr_text(), "fenced by a newer owner");
  // Fenced: the export nodes refused A's stale epoch (ownership epoch A << 32 | attempt).
  if (fenced)
    CHECK(std::regex_search(c.a1.stderr_text() + c.b1.stderr_text(),
                            std::regex("fence: refusing write of [0-9]+ bytes at [0-9]+ from "
                                       "stale epoch [0-9]+ \\(session current [0-9]+\\)")));
  CHECK_MESSAGE((lease_lost || fenced), a.stderr_text());
  for (const char* log : {"a1.log", "b1.log"}) {
    bool b_wrote = false;
    CHECK_FALSE(OlderWriteAfterNewer(c.dir.File(log), epoch_b << 32, &b_wrote));
    CHECK(b_wrote);
  }
  REQUIRE(ReadFor(cb, back, kBlock, 10s).ok());
  CHECK(back == second);
  CHECK_NBD_OK(cb.Shutdown());
  CHECK_NBD_OK(ca.Shutdown());
  a.Stop();
  CHECK(a.SanitizerReports().empty());
  b.reset();
}

TEST_CASE("map --cluster finds the volume's owner at the address its serve advertises") {
  ClusterSetup c;
  c.CreateMirror();
  auto print_endpoint = [&c](const std::string& volume) {
    return RunAggregator({"map", "--cluster", c.url, "--print-endpoint", volume});
  };
  CommandResult r = print_endpoint("nope");
  CHECK(r.exit_code == 1);
  CHECK_MESSAGE(Contains(r.stderr_text, "error: volume nope is not in the catalog at " + c.url),
                r.stderr_text);
  r = print_endpoint("mir");
  CHECK(r.exit_code == 1);
  CHECK(Contains(r.stderr_text, "error: volume mir has no owner now: no serve --cluster holds it"));

  {
    // On Unix sockets only, an owner has no address to give.
    AggregatorServer a(c.Serve());
    const std::string owner = "(pid " + std::to_string(a.pid()) + ")";
    r = print_endpoint("mir");
    CHECK(r.exit_code == 1);
    CHECK_MESSAGE(Contains(r.stderr_text, owner + ", which advertises no NBD address"),
                  r.stderr_text);
    CHECK(a.Stop() == 0);
  }
  {
    // --advertise goes into the owner record as given.
    AggregatorServer a(c.Serve({"--advertise", "db.example:10809"}));
    r = RunAggregator({"status", "--cluster", c.url, "--json"});
    CHECK_MESSAGE(Contains(r.stdout_text, "\"nbd\": \"db.example:10809\""), r.stdout_text);
    CHECK(a.Stop() == 0);
  }

  // Listening on TCP: the first --listen address, checked with a handshake for the volume.
  AggregatorServer a(FaultAggregatorOptions({"--cluster", c.url, "--lease-ttl", "10", "mir"},
                                            AggregatorListen::kTcp4));
  const std::string endpoint = "127.0.0.1:" + std::to_string(a.port());
  r = print_endpoint("mir");
  CHECK_MESSAGE(r.exit_code == 0, r.stderr_text);
  CHECK(r.stdout_text == endpoint + "\n");
  // The owner killed: its record stays until its lease (10 s) expires, and says where it was.
  const std::string owner = "(pid " + std::to_string(a.pid()) + ")";
  a.Kill(SIGKILL);
  a.Wait(5s);
  r = print_endpoint("mir");
  CHECK(r.exit_code == 1);
  CHECK_MESSAGE(Contains(r.stderr_text, "error: volume mir is owned by "), r.stderr_text);
  CHECK(Contains(r.stderr_text, owner + ": aggregator at " + endpoint + " unreachable: "));
  CHECK(CountOf(r.stderr_text, "error:") == 1);
}

TEST_CASE("etcds:// with a client certificate: export, create, serve, status, map --cluster") {
  X509Dir pki;
  EtcdServerOptions options;
  options.certificates_dir = pki.path();
  options.client_cert_auth = true;
  EtcdServer etcd(options);
  const std::string url = etcd.url("dst");
  REQUIRE(url.rfind("etcds://", 0) == 0);
  const std::string ca = pki.path() + "/ca-cert.pem";
  const std::string cert = pki.path() + "/client-cert.pem";
  const std::string key = pki.path() + "/client-key.pem";
  auto with_tls = [&](std::vector<std::string> args) {
    return Concat(std::move(args), {"--etcd-cacert", ca, "--etcd-cert", cert, "--etcd-key", key});
  };

  // Refused: etcd's certificate without the CA that signed it, etcd refusing a client without
  // a certificate, TLS files for a plain URL or without --cluster.
  CommandResult r =
      RunAggregator({"export", "list", "--cluster", url, "--etcd-cert", cert, "--etcd-key", key});
  CHECK(r.exit_code == 1);
  CHECK_MESSAGE(
      Contains(r.stderr_text, "etcd " + etcd.endpoint() +
                                  ": get prefix /dst/exports/: TLS handshake: certificate "
                                  "verify failed"),
      r.stderr_text);
  CHECK(CountOf(r.stderr_text, "error:") == 1);
  r = RunAggregator({"status", "--cluster", url, "--etcd-cacert", ca});
  CHECK(r.exit_code == 1);
  CHECK_MESSAGE(Contains(r.stderr_text, "TLS handshake: "), r.stderr_text);
  r = RunAggregator(with_tls({"status", "--cluster", "etcd://" + etcd.endpoint() + "/dst"}));
  CHECK(r.exit_code == 1);
  CHECK(Contains(r.stderr_text, "etcd TLS files given for a plain etcd:// URL (use etcds://)"));
  r = RunAggregator({"status", "--etcd-cacert", ca});
  CHECK(r.exit_code == 1);
  CHECK(Contains(r.stderr_text,
                 "--etcd-cacert, --etcd-cert and --etcd-key are for --cluster etcds://"));

  TempDir dir("dst-fault-cluster-tls");
  Member a1(dir.File("a1.img"), 8 * kMiB);
  Member b1(dir.File("b1.img"), 8 * kMiB);
  for (auto [member, zone] : {std::pair{&a1, "zone-a"}, {&b1, "zone-b"}}) {
    r = RunAggregator(with_tls({"export", "add", member->uri(), "--zone", zone, "--cluster", url}));
    REQUIRE_MESSAGE(r.exit_code == 0, r.stderr_text);
  }
  r = RunAggregator(with_tls({"export", "list", "--cluster", url}));
  CHECK(Contains(r.stdout_text, a1.uri() + " zone=zone-a size=8 MiB state=free"));
  r = RunAggregator(with_tls({"create", "--cluster", url, "--name", "mir", "--layout", "mirror"}));
  REQUIRE_MESSAGE(r.exit_code == 0, r.stderr_text);

  // serve keeps its lease over TLS past its TTL, and map --cluster finds it.
  AggregatorServer a(FaultAggregatorOptions(with_tls({"--cluster", url, "--lease-ttl", "2", "mir"}),
                                            AggregatorListen::kTcp4));
  std::this_thread::sleep_for(3s);
  NbdClient client;
  REQUIRE_NBD_OK(client.Connect(a.uri("mir")));
  REQUIRE(WriteFor(client, RandomBytes(kBlock, 1), 0, 10s).ok());
  CHECK_NBD_OK(client.Shutdown());
  CHECK_FALSE(Contains(a.stderr_text(), "no more writes"));
  const std::string endpoint = "127.0.0.1:" + std::to_string(a.port());
  r = RunAggregator(with_tls({"status", "--cluster", url}));
  CHECK_MESSAGE(
      Contains(r.stdout_text, "(pid " + std::to_string(a.pid()) + ") at " + endpoint + " members="),
      r.stdout_text);
  r = RunAggregator(with_tls({"map", "--cluster", url, "--print-endpoint", "mir"}));
  CHECK_MESSAGE(r.stdout_text == endpoint + "\n", r.stderr_text);
  CHECK(a.Stop() == 0);
  CHECK(a.SanitizerReports().empty());
}

TEST_CASE("volume remove --cluster: refused while owned, then the record gone, exports freed") {
  ClusterSetup c;
  c.CreateMirror();
  auto remove = [&c](std::vector<std::string> extra = {}) {
    return RunAggregator(Concat({"volume", "remove", "mir", "--cluster", c.url}, extra));
  };
  {
    AggregatorServer a(c.Serve());
    const std::string owner = "(pid " + std::to_string(a.pid()) + ")";
    for (const std::vector<std::string>& extra : {std::vector<std::string>{}, {"--force"}}) {
      const CommandResult r = remove(extra);
      CHECK(r.exit_code == 1);
      CHECK_MESSAGE(Contains(r.stderr_text, "error: volume mir is owned by "), r.stderr_text);
      CHECK(Contains(r.stderr_text, owner + ": stop its serve first"));
    }
    CHECK(a.Stop() == 0);
  }
  CommandResult r = remove();
  REQUIRE_MESSAGE(r.exit_code == 0, r.stderr_text);
  CHECK(r.stdout_text == "volume mir (ready) removed from the catalog at " + c.url +
                             "; exports freed: " + c.a1.uri() + ", " + c.b1.uri() + "\n");
  r = RunAggregator({"export", "list", "--cluster", c.url});
  CHECK(CountOf(r.stdout_text, "state=free") == 3);
  r = RunAggregator({"status", "--cluster", c.url});
  CHECK_FALSE(Contains(r.stdout_text, "mir "));
  r = remove();
  CHECK(r.exit_code == 1);
  CHECK(Contains(r.stderr_text, "error: volume mir is not in the catalog at " + c.url));
  r = RunAggregator({"volume", "list", "--cluster", c.url});
  CHECK(r.exit_code == 1);
  CHECK(Contains(r.stderr_text, "volume list asks a running aggregator: --cluster is for remove"));

  // The freed exports keep the old volume's superblocks: create --force formats over them.
  r = RunAggregator({"create", "--cluster", c.url, "--name", "mir", "--layout", "mirror"});
  CHECK(r.exit_code == 1);
  CHECK_MESSAGE(Contains(r.stderr_text, "use --force to overwrite it"), r.stderr_text);
  r = RunAggregator({"export", "list", "--cluster", c.url});
  CHECK(CountOf(r.stdout_text, "state=free") == 3);
  r = RunAggregator(
      {"create", "--cluster", c.url, "--name", "mir", "--layout", "mirror", "--force"});
  REQUIRE_MESSAGE(r.exit_code == 0, r.stderr_text);
  Aggregator a(c.Serve().args);
}

TEST_CASE("a create killed while formatting leaves a creating record that remove then clears") {
  EtcdServer etcd;
  const std::string url = etcd.url("dst");
  TempDir dir("dst-fault-cluster-killed");
  // Writes of 3 s keep the create formatting until it is killed, however fast the machine.
  Member a1(dir.File("a1.img"), 8 * kMiB, {"delay"}, {"delay-write=3000ms"});
  Member b1(dir.File("b1.img"), 8 * kMiB, {"delay"}, {"delay-write=3000ms"});
  for (auto [member, zone] : {std::pair{&a1, "zone-a"}, {&b1, "zone-b"}})
    REQUIRE(RunAggregator({"export", "add", member->uri(), "--zone", zone, "--cluster", url})
                .exit_code == 0);
  Process create({DST_AGGREGATOR_PATH, "create", "--cluster", url, "--name", "mir", "--layout",
                  "mirror", "--lease-ttl", "6"});
  CHECK(WaitForText(
      [&] {
        return RunAggregator({"status", "--cluster", url}).stdout_text;
      },
      "state=creating", 10s));
  REQUIRE(create.Running());
  CommandResult r = RunAggregator({"volume", "remove", "mir", "--cluster", url, "--force"});
  CHECK(r.exit_code == 1);
  const std::string create_log = create.stderr_text();
  CHECK_MESSAGE(Contains(r.stderr_text, "error: volume mir is being created (its create's lease "),
                r.stderr_text << "create's log:\n" << create_log);
  CHECK(Contains(r.stderr_text, " is alive): not removing it"));

  create.Kill(SIGKILL);
  REQUIRE(create.Wait(5s));
  // Once the killed create's lease (6 s: renewed every 2 s, so that a loaded machine does not
  // let it lapse while the create runs) has expired, its record is named a leftover and removed.
  r = {};
  const auto deadline = SteadyClock::now() + 20s;
  while (SteadyClock::now() < deadline) {
    r = RunAggregator({"create", "--cluster", url, "--name", "mir", "--layout", "mirror"});
    if (Contains(r.stderr_text, "left \"creating\"")) break;
    std::this_thread::sleep_for(200ms);
  }
  CHECK_MESSAGE(Contains(r.stderr_text, "error: volume mir exists in the catalog at " + url +
                                            " (left \"creating\" by a create that is gone: "
                                            "volume remove --cluster " +
                                            url + " mir removes it)"),
                r.stderr_text);
  r = RunAggregator({"volume", "remove", "mir", "--cluster", url});
  REQUIRE_MESSAGE(r.exit_code == 0, r.stderr_text);
  CHECK(Contains(r.stdout_text, "volume mir (creating) removed from the catalog at " + url));
  r = RunAggregator({"export", "list", "--cluster", url});
  CHECK(CountOf(r.stdout_text, "state=free") == 2);
}

TEST_CASE("etcd gone while serving: writes go on until the lease would expire, then stop") {
  ClusterSetup c;
  c.CreateMirror();
  AggregatorServer a(c.Serve());
  NbdClient client;
  REQUIRE_NBD_OK(client.Connect(a.uri("mir")));
  REQUIRE(WriteFor(client, RandomBytes(kBlock, 1), 0, 10s).ok());
  c.etcd.Stop();
  const auto gone = SteadyClock::now();
  // The data path does not wait for etcd.
  REQUIRE(WriteFor(client, RandomBytes(kBlock, 2), kBlock, 10s).ok());
  REQUIRE(FlushFor(client).ok());
  CHECK(WaitForText([&] { return a.stderr_text(); }, "volume mir: cluster lease ", 10s));
  CHECK(SteadyClock::now() - gone < 5s);
  CHECK(Contains(a.stderr_text(), "lost (not renewed for 2 s): no more writes"));
  CHECK(WriteFor(client, RandomBytes(kBlock, 3), 2 * kBlock, 10s).err == EPERM);
  CHECK_NBD_OK(client.Shutdown());
  // A volume that stopped writing is not marked clean: whoever owns it next recovers it.
  CHECK(a.Stop() == 1);
  CHECK(Contains(a.stderr_text(), "not closed clean"));
  CHECK(a.SanitizerReports().empty());
}

TEST_SUITE_END();

}  // namespace
}  // namespace dst::test::fault::fault_cluster_test
