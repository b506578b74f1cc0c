// dst-aggregator's client leg, secured and bounded: TLS (PSK and X.509)
// reached by nbdinfo, qemu and libnbd; plain clients refused under
// --tls=require without learning anything; and the limits that keep one
// client (or many half-open ones) from starving the rest: --max-connections,
// --handshake-timeout, --request-timeout. In every case a client connected
// beforehand keeps reading and writing.
#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <thread>

#include <libnbd.h>

#include "common/nbd_protocol.h"
#include "tests/harness/aggregator_process.h"
#include "tests/harness/tls_credentials.h"
#include "tests/integration/plugin_fixture.h"
#include "tests/integration/raw_client.h"
#include "tests/integration/raw_volume_fixture.h"

namespace dst::test::aggregator_security_test {
namespace {

using namespace std::chrono_literals;
namespace nbd = ::dst::nbd;

constexpr uint64_t kVolumeSize = RawVolumeFixture::kVolumeSize;

class SecurityFixture : public RawVolumeFixture {
 public:
  SecurityFixture() : RawVolumeFixture("dst-agg-security") {}

  // nbds:// URI of vol0 on the TCP listener, with URI query parameters.
  std::string TlsUri(const std::string& user, const std::string& query) const {
    return "nbds://" + (user.empty() ? "" : user + "@") +
           "127.0.0.1:" + std::to_string(aggregator().port()) + "/vol0?" + query;
  }
};

// A libnbd client over TLS; credential files named in the URI need
// allow_local_file, which libnbd keeps off by default.
void ConnectTls(NbdClient& client, const std::string& uri) {
  REQUIRE(nbd_set_uri_allow_local_file(client.handle(), true) == 0);
  REQUIRE_NBD_OK(client.Connect(uri));
}

CommandResult Nbdinfo(const std::vector<std::string>& args) {
  std::vector<std::string> argv{DST_TOOL_NBDINFO};
  argv.insert(argv.end(), args.begin(), args.end());
  return RunCommand(argv, 30s);
}

// qemu-io over NBD with TLS credentials given as a qemu object.
CommandResult QemuIo(const std::string& tls_object, int port,
                     const std::vector<std::string>& cmds) {
  std::vector<std::string> argv{DST_TOOL_QEMU_IO, "--object", tls_object, "--image-opts"};
  for (const std::string& c : cmds) {
    argv.push_back("-c");
    argv.push_back(c);
  }
  argv.push_back("driver=nbd,host=127.0.0.1,port=" + std::to_string(port) +
                 ",export=vol0,tls-creds=tls0");
  return RunCommand(argv, 60s);
}

Bytes Text(const std::string& s) {
  return Bytes(s.begin(), s.end());
}

// NBD_OPT_INFO / NBD_OPT_GO payload for `name` with no info requests.
Bytes InfoPayload(const std::string& name) {
  Bytes payload(4 + name.size() + 2, 0);
  nbd::StoreBE32(payload.data(), static_cast<uint32_t>(name.size()));
  std::copy(name.begin(), name.end(), payload.begin() + 4);
  return payload;
}

TEST_SUITE_BEGIN("aggregator_tls");

TEST_CASE_FIXTURE(SecurityFixture, "PSK: nbdinfo, libnbd and qemu-io reach the volume") {
  const PskFile psk("alice");
  AggregatorServer& agg = Start({"--tls=require", "--tls-psk", psk.path()});
  const CommandResult info = Nbdinfo({"--size", TlsUri("alice", "tls-psk-file=" + psk.path())});
  REQUIRE_MESSAGE(info.exit_code == 0, info.stderr_text);
  CHECK(info.stdout_text == std::to_string(kVolumeSize) + "\n");

  NbdClient client;
  ConnectTls(client, TlsUri("alice", "tls-psk-file=" + psk.path()));
  CheckReadWrite(client, 5 * kMiB, 1, 256 * kKiB);
  CHECK(LogShows(agg, "connected to volume vol0 (structured replies, TLS PSK alice)"));

  const std::string object =
      "tls-creds-psk,id=tls0,endpoint=client,username=alice,dir=" + psk.dir();
  const CommandResult img =
      RunCommand({DST_TOOL_QEMU_IMG, "info", "--output=json", "--object", object, "--image-opts",
                  "driver=nbd,host=127.0.0.1,port=" + std::to_string(agg.port()) +
                      ",export=vol0,tls-creds=tls0"},
                 60s);
  REQUIRE_MESSAGE(img.exit_code == 0, img.stderr_text);
  CHECK(Contains(img.stdout_text, "\"virtual-size\": " + std::to_string(kVolumeSize)));
  const CommandResult qemu =
      QemuIo(object, agg.port(), {"write -P 0x5a 2M 1M", "read -P 0x5a 2M 1M"});
  REQUIRE_MESSAGE(qemu.exit_code == 0, qemu.stdout_text << qemu.stderr_text);
  CHECK(!Contains(qemu.stdout_text, "Pattern verification failed"));
  // What qemu wrote over TLS is there for the other client.
  CHECK(client.ReadOrThrow(1 * kMiB, 2 * kMiB) == Bytes(1 * kMiB, 0x5a));
}

TEST_CASE_FIXTURE(SecurityFixture, "X.509: certificates both ways, client certificate required") {
  const X509Dir pki("client-one");
  AggregatorServer& agg =
      Start({"--tls=require", "--tls-certificates", pki.path(), "--tls-verify-peer"});
  const CommandResult info = Nbdinfo({"--size", TlsUri("", "tls-certificates=" + pki.path())});
  REQUIRE_MESSAGE(info.exit_code == 0, info.stderr_text);
  CHECK(info.stdout_text == std::to_string(kVolumeSize) + "\n");
  CHECK(LogShows(agg, "(structured replies, TLS /CN=client-one)"));
  CHECK_FALSE(Contains(agg.stderr_text(), "without --tls-verify-peer"));

  const std::string object = "tls-creds-x509,id=tls0,endpoint=client,dir=" + pki.path();
  const CommandResult qemu =
      QemuIo(object, agg.port(), {"write -P 0xa5 8M 512K", "read -P 0xa5 8M 512K"});
  REQUIRE_MESSAGE(qemu.exit_code == 0, qemu.stdout_text << qemu.stderr_text);
  CHECK(!Contains(qemu.stdout_text, "Pattern verification failed"));

  // The CA alone (no client certificate) is not enough.
  const TempDir ca_only("dst-pki-ca-only");
  std::filesystem::copy_file(pki.path() + "/ca-cert.pem", ca_only.File("ca-cert.pem"));
  const CommandResult refused =
      Nbdinfo({"--size", TlsUri("", "tls-certificates=" + ca_only.path())});
  CHECK(refused.exit_code != 0);
  CHECK(LogShows(agg, "TLS handshake"));
  NbdClient client;
  ConnectTls(client, TlsUri("", "tls-certificates=" + pki.path()));
  CheckReadWrite(client, 9 * kMiB, 2, 256 * kKiB);
}

// The audit's T7: --tls=require with X.509 and no client verification let an
// anonymous client in without a word at start.
TEST_CASE_FIXTURE(SecurityFixture,
                  "X.509 without --tls-verify-peer: a warning says anyone gets in") {
  const X509Dir pki;
  AggregatorServer& agg = Start({"--tls=require", "--tls-certificates", pki.path()});
  CHECK(LogShows(agg,
                 "warning: --tls=require with X.509 but without --tls-verify-peer: clients are "
                 "not authenticated, anyone who can connect gets access; TLS only keeps the "
                 "network from reading or changing the traffic"));
  // As it says: a client with no certificate of its own reads the volume.
  const TempDir ca_only("dst-pki-ca-only");
  std::filesystem::copy_file(pki.path() + "/ca-cert.pem", ca_only.File("ca-cert.pem"));
  const CommandResult info = Nbdinfo({"--size", TlsUri("", "tls-certificates=" + ca_only.path())});
  CHECK_MESSAGE(info.exit_code == 0, info.stderr_text);
  CHECK(info.stdout_text == std::to_string(kVolumeSize) + "\n");
}

// The audit's S2: a 0644 --tls-psk, a 0666 --key-file and a 0644
// server-key.pem were used without a word.
TEST_CASE_FIXTURE(SecurityFixture, "key files other users can read or change are refused") {
  namespace fs = std::filesystem;
  const auto refusal = [](const std::string& what, const std::string& path,
                          const std::string& exposure) {
    return what + ": " + exposure + ", and it holds a secret key; refusing to use it (chmod 600 " +
           path + ")";
  };
  const PskFile psk("alice");
  fs::permissions(psk.path(), fs::perms::others_read, fs::perm_options::add);
  const X509Dir pki;
  const std::string open_pki = dir().File("open-pki");
  fs::copy(pki.path(), open_pki);
  const std::string server_key = open_pki + "/server-key.pem";
  fs::permissions(server_key, fs::perms::owner_read | fs::perms::owner_write |
                                  fs::perms::group_read | fs::perms::others_read);
  // Clients: refused at start and by --check-config alike.
  for (const bool check_only : {false, true}) {
    const auto also = [check_only](std::vector<std::string> args) {
      if (check_only) args.insert(args.begin(), "--check-config");
      return args;
    };
    const StartFailure p = StartFailing(also({"--tls=require", "--tls-psk", psk.path()}));
    CHECK(p.exit_code == 1);
    CHECK_MESSAGE(Contains(p.stderr_text, refusal("--tls-psk " + psk.path(), psk.path(),
                                                  "mode 0604 lets every user read it")),
                  p.stderr_text);
    const StartFailure x = StartFailing(also({"--tls=require", "--tls-certificates", open_pki}));
    CHECK(x.exit_code == 1);
    CHECK_MESSAGE(Contains(x.stderr_text, refusal("--tls-certificates: " + server_key, server_key,
                                                  "mode 0644 lets every user read it")),
                  x.stderr_text);
  }

  // A checksum key, for create and serve.
  const std::string key = dir().File("volume.key");
  WriteKeyFile(key, RandomBytes(32, 1));
  fs::permissions(key,
                  fs::perms::group_write | fs::perms::others_write | fs::perms::group_read |
                      fs::perms::others_read,
                  fs::perm_options::add);
  const std::string member = "nbd+unix:///x?socket=" + dir().File("no-such.sock");
  const CommandResult create =
      RunCommand({DST_AGGREGATOR_PATH, "create", "--name", "k", "--checksum", "blake2b-keyed",
                  "--key-file", key, member});
  CHECK(create.exit_code == 1);
  CHECK_MESSAGE(Contains(create.stderr_text,
                         refusal("--key-file " + key, key, "mode 0666 lets other users change it")),
                create.stderr_text);
  const CommandResult serve =
      RunCommand({DST_AGGREGATOR_PATH, "serve", "--check-config", "--key-file", key, member});
  CHECK(serve.exit_code == 1);
  CHECK_MESSAGE(Contains(serve.stderr_text, "mode 0666 lets other users change it"),
                serve.stderr_text);

  // The member leg's pre-shared keys and client key.
  const PskFile member_psk("alice");
  fs::permissions(member_psk.path(), fs::perms::group_read, fs::perm_options::add);
  const CommandResult mpsk =
      RunCommand({DST_AGGREGATOR_PATH, "serve", "--check-config", "--raw", "--member-tls-psk",
                  member_psk.path(), "--member-tls-username", "alice", "nbds://127.0.0.1:1/x"});
  CHECK(mpsk.exit_code == 1);
  CHECK_MESSAGE(
      Contains(mpsk.stderr_text, refusal("member-tls-psk " + member_psk.path(), member_psk.path(),
                                         "mode 0640 lets its group read it")),
      mpsk.stderr_text);
  const std::string client_key = pki.path() + "/client-key.pem";
  fs::permissions(client_key, fs::perms::others_read, fs::perm_options::add);
  const CommandResult mx509 =
      RunCommand({DST_AGGREGATOR_PATH, "serve", "--check-config", "--raw",
                  "--member-tls-certificates", pki.path(), "nbds://127.0.0.1:1/x"});
  CHECK(mx509.exit_code == 1);
  CHECK_MESSAGE(Contains(mx509.stderr_text,
                         refusal("member-tls-certificates " + pki.path() + ": client-key.pem",
                                 client_key, "mode 0604 lets every user read it")),
                mx509.stderr_text);
}

TEST_CASE_FIXTURE(SecurityFixture, "--tls=require: a plain client gets ERR_TLS_REQD and no data") {
  const PskFile psk("alice");
  AggregatorServer& agg = Start({"--tls=require", "--tls-psk", psk.path()});
  RawClient raw(agg.port());
  raw.Greet();
  Bytes seen;
  for (uint32_t option :
       std::initializer_list<uint32_t>{nbd::kOptList, nbd::kOptStructuredReply, nbd::kOptInfo,
                                       nbd::kOptGo, nbd::kOptListMetaContext, 12345u}) {
    const bool named = option == nbd::kOptInfo || option == nbd::kOptGo;
    raw.SendOption(option, named ? InfoPayload("vol0") : Bytes{});
    const OptionReply reply = raw.ReadOptionReply();
    CHECK_MESSAGE(reply.header.reply_type == nbd::kRepErrTlsReqd, nbd::OptionName(option));
    CHECK(reply.header.option == option);
    seen.insert(seen.end(), reply.data.begin(), reply.data.end());
  }
  // Nothing about the volume came back: not its name, not its size.
  CHECK(!Contains(std::string(seen.begin(), seen.end()), "vol0"));
  // EXPORT_NAME cannot be answered with an error: the server hangs up.
  raw.SendOption(nbd::kOptExportName, Text("vol0"));
  CHECK(raw.ClosedByServer());
  CHECK(LogShows(agg, "NBD_OPT_EXPORT_NAME before TLS; TLS is required"));

  const CommandResult plain = Nbdinfo({"--size", agg.uri()});
  CHECK(plain.exit_code != 0);
  NbdClient client;
  ConnectTls(client, TlsUri("alice", "tls-psk-file=" + psk.path()));
  CheckReadWrite(client, 0, 3, 256 * kKiB);
}

TEST_CASE_FIXTURE(SecurityFixture, "a wrong key or an unknown identity fails the handshake") {
  const PskFile psk("alice"), other_key("alice"), stranger("mallory");
  AggregatorServer& agg = Start({"--tls=require", "--tls-psk", psk.path()});
  NbdClient bystander;
  ConnectTls(bystander, TlsUri("alice", "tls-psk-file=" + psk.path()));
  for (const auto& [user, file] :
       {std::pair{"alice", other_key.path()}, {"mallory", stranger.path()}}) {
    const CommandResult r = Nbdinfo({"--size", TlsUri(user, "tls-psk-file=" + file)});
    CHECK_MESSAGE(r.exit_code != 0, user << " got in with the wrong key");
  }
  CHECK(LogShows(agg, "handshake ended: TLS handshake"));
  CheckReadWrite(bystander, 12 * kMiB, 4, 256 * kKiB);
}

TEST_CASE_FIXTURE(SecurityFixture, "plain text sent right after STARTTLS is refused") {
  const PskFile psk("alice");
  AggregatorServer& agg = Start({"--tls=require", "--tls-psk", psk.path()});
  RawClient raw(agg.port());
  raw.Greet();
  // STARTTLS and an option behind it in one segment: an attacker on the path
  // injecting a command that the server would run after the upgrade.
  Bytes burst = OptionMessage(nbd::kOptStartTls, {});
  const Bytes injected = OptionMessage(nbd::kOptList, {});
  burst.insert(burst.end(), injected.begin(), injected.end());
  raw.Send(burst);
  const OptionReply ack = raw.ReadOptionReply();
  CHECK(ack.header.reply_type == nbd::kRepAck);
  CHECK(raw.ClosedByServer());
  CHECK(LogShows(agg, "data sent after STARTTLS before the TLS handshake"));
}

TEST_CASE_FIXTURE(SecurityFixture, "--tls=on serves plain and TLS clients alike") {
  const PskFile psk("alice");
  AggregatorServer& agg = Start({"--tls=on", "--tls-psk", psk.path()});
  NbdClient plain, secure;
  REQUIRE_NBD_OK(plain.Connect(agg.uri()));
  ConnectTls(secure, TlsUri("alice", "tls-psk-file=" + psk.path()));
  CheckReadWrite(plain, 1 * kMiB, 5, 256 * kKiB);
  CheckReadWrite(secure, 3 * kMiB, 6, 256 * kKiB);
  CHECK(plain.ReadOrThrow(256 * kKiB, 3 * kMiB) == RandomBytes(256 * kKiB, 6));
}

TEST_CASE_FIXTURE(SecurityFixture, "TLS configuration errors stop the start with a clear message") {
  const PskFile psk("alice");
  const X509Dir pki;
  const std::string bad_psk = dir().File("bad.psk");
  std::ofstream(bad_psk) << "alice:xyz\n";
  std::filesystem::permissions(
      bad_psk, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  const std::string no_key_dir = dir().File("no-key");
  std::filesystem::create_directory(no_key_dir);
  std::filesystem::copy_file(pki.path() + "/server-cert.pem", no_key_dir + "/server-cert.pem");
  const struct {
    std::vector<std::string> args;
    std::string message;
  } cases[] = {
      {{"--tls=require"}, "--tls=require needs --tls-psk FILE or --tls-certificates DIR"},
      {{"--tls=maybe"}, "--tls maybe: expected off, on or require"},
      {{"--tls-psk", psk.path()}, "TLS credentials given but --tls is off"},
      {{"--tls=on", "--tls-psk", dir().File("missing.psk")}, "missing.psk: No such file"},
      {{"--tls=on", "--tls-psk", bad_psk}, "bad.psk:1: the key is not an even number of hex"},
      {{"--tls=on", "--tls-psk", psk.path(), "--tls-certificates", pki.path()}, "give only one"},
      {{"--tls=on", "--tls-certificates", no_key_dir}, "server-key.pem"},
      {{"--tls=on", "--tls-psk", psk.path(), "--tls-verify-peer"}, "needs --tls-certificates"},
  };
  for (const auto& c : cases) {
    const StartFailure f = StartFailing(c.args);
    CHECK_MESSAGE(f.exit_code != 0, JoinArgv(c.args));
    CHECK_MESSAGE(Contains(f.stderr_text, c.message), JoinArgv(c.args) << ":\n" << f.stderr_text);
  }
}

TEST_SUITE_END();

TEST_SUITE_BEGIN("aggregator_limits");

// Waits until a raw connection is answered with the greeting (the server
// has room again), for up to 5 s.
bool GreetedWithin(int port, std::chrono::seconds timeout = 5s) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    RawClient raw(port, 2s);
    uint8_t hello[18];
    if (raw.Recv(hello)) return true;
    std::this_thread::sleep_for(100ms);
  }
  return false;
}

TEST_CASE_FIXTURE(SecurityFixture, "--max-connections: one too many is closed, the others work") {
  AggregatorServer& agg = Start({"--max-connections", "2"});
  NbdClient first, second;
  REQUIRE_NBD_OK(first.Connect(agg.uri()));
  REQUIRE_NBD_OK(second.Connect(agg.uri()));
  RawClient third(agg.port());
  CHECK(third.ClosedByServer());  // not even greeted
  CHECK(LogShows(agg, "refused: 2 connections already open (--max-connections)"));
  CheckReadWrite(first, 0, 7, 256 * kKiB);
  CheckReadWrite(second, 1 * kMiB, 8, 256 * kKiB);
  REQUIRE_NBD_OK(second.Shutdown());
  CHECK(GreetedWithin(agg.port()));
  CheckReadWrite(first, 2 * kMiB, 9, 256 * kKiB);
}

TEST_CASE_FIXTURE(SecurityFixture, "--handshake-timeout drops silent and slow handshakes") {
  AggregatorServer& agg = Start({"--handshake-timeout", "1s"});
  NbdClient bystander;
  REQUIRE_NBD_OK(bystander.Connect(agg.uri()));
  const auto start = std::chrono::steady_clock::now();
  RawClient silent(agg.port()), slow(agg.port());
  slow.Greet();
  slow.Send(Bytes(7, 0x49));  // part of an option header, then nothing
  uint8_t hello[18];
  CHECK(silent.Recv(hello));       // the greeting arrives first
  CHECK(silent.ClosedByServer());  // then the hang-up
  CHECK(slow.ClosedByServer());
  const auto took = std::chrono::steady_clock::now() - start;
  CHECK(took >= 900ms);
  CHECK(took < 5s);
  CHECK(LogShows(agg, "no export chosen within 1000 ms; disconnected"));
  CheckReadWrite(bystander, 0, 10, 256 * kKiB);
}

TEST_CASE_FIXTURE(SecurityFixture, "--request-timeout drops a client stalled inside a request") {
  AggregatorServer& agg = Start({"--request-timeout", "1s"}, AggregatorListen::kUnix);
  NbdClient bystander;
  REQUIRE_NBD_OK(bystander.Connect(agg.uri()));
  RawClient half_header(agg.socket_path()), half_payload(agg.socket_path()),
      idle(agg.socket_path());
  for (RawClient* raw : {&half_header, &half_payload, &idle}) {
    raw->Greet();
    REQUIRE(raw->Go("vol0").size == kVolumeSize);
  }
  const auto header = Request(nbd::kCmdRead, 0, 4096, 1).Encode();
  half_header.Send(std::span(header).first(10));
  half_payload.SendRequest(Request(nbd::kCmdWrite, 0, 64 * 1024, 2), Bytes(1024, 1));
  CHECK(half_header.ClosedByServer());
  CHECK(half_payload.ClosedByServer());
  CHECK(LogShows(agg, "request header: client stalled for 1000 ms in the middle of a request"));
  CHECK(LogShows(agg, "write payload: client stalled for 1000 ms in the middle of a request"));
  // Idle between requests is not stalling: the kernel client idles for hours.
  std::this_thread::sleep_for(1500ms);
  idle.SendRequest(Request(nbd::kCmdRead, 0, 4096, 3));
  const nbd::SimpleReply reply = idle.ReadSimpleReply();
  CHECK(reply.error == 0);
  Bytes data(4096);
  idle.RecvOrThrow(data);
  CheckReadWrite(bystander, 0, 11, 256 * kKiB);
}

TEST_CASE_FIXTURE(SecurityFixture, "a client that stops reading its replies is dropped") {
  AggregatorServer& agg = Start({"--request-timeout", "1s", "--max-inflight-per-client", "4M"},
                                AggregatorListen::kUnix);
  NbdClient bystander;
  REQUIRE_NBD_OK(bystander.Connect(agg.uri()));
  RawClient deaf(agg.socket_path());
  deaf.Greet();
  REQUIRE(deaf.Go("vol0").size == kVolumeSize);
  // 64 MiB of reads, never read back: the socket fills, the replies stall.
  for (uint64_t i = 0; i < 64; ++i)
    deaf.SendRequest(Request(nbd::kCmdRead, i * kMiB, kMiB, i));
  CHECK(LogShows(agg, "replies not read for 1000 ms; disconnected", 15s));
  CheckReadWrite(bystander, 0, 12, 256 * kKiB);
}

TEST_CASE_FIXTURE(SecurityFixture, "half-open handshakes by the hundred cannot lock clients out") {
  AggregatorServer& agg = Start({"--max-connections", "40", "--handshake-timeout", "2s"});
  NbdClient bystander;
  REQUIRE_NBD_OK(bystander.Connect(agg.uri()));
  std::vector<std::unique_ptr<RawClient>> attackers;
  for (int i = 0; i < 100; ++i)
    attackers.push_back(std::make_unique<RawClient>(agg.port(), 10s));
  // The connected client is not disturbed while the slots are taken.
  CheckReadWrite(bystander, 0, 13, 256 * kKiB);
  // Every attacker is greeted-and-dropped or dropped at once, within the timeout.
  const auto start = std::chrono::steady_clock::now();
  size_t greeted = 0;
  for (auto& raw : attackers) {
    uint8_t hello[18];
    if (raw->Recv(hello)) {
      ++greeted;
      CHECK(raw->ClosedByServer());
    }
  }
  // All from 127.0.0.1, which may hold three quarters of the 40 slots; the
  // bystander holds one of them.
  CHECK(greeted <= 30);
  CHECK(greeted >= 29);
  CHECK(std::chrono::steady_clock::now() - start < 6s);
  attackers.clear();
  NbdClient late;
  CHECK(GreetedWithin(agg.port()));
  REQUIRE_NBD_OK(late.Connect(agg.uri()));
  CheckReadWrite(late, 4 * kMiB, 14, 256 * kKiB);
  CheckReadWrite(bystander, 8 * kMiB, 15, 256 * kKiB);
}

TEST_SUITE_END();

}  // namespace
}  // namespace dst::test::aggregator_security_test
