// Integration tests of TLS between the aggregator and its members (docs/security.md):
// export nodes are nbdkit with our plugin and --tls=require, with pre-shared keys made by psktool
// or X.509 certificates made by certtool at test time; `dst-aggregator create`, `inspect` and
// `serve` reach them through nbds:// and nbds+unix:// URIs with the --member-tls-* options (or
// the config file's member-tls-* keys). Clients (libnbd, fio) reach the aggregator as usual.
// Failures are checked the way an operator meets them: one error line naming the member or the
// file, and no server.
#include <csignal>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "tests/harness/aggregator_process.h"
#include "tests/integration/plugin_fixture.h"
#include "tests/integration/volume_fixture.h"

namespace dst::test::aggregator_member_tls_test {
namespace {

using namespace std::chrono_literals;

constexpr uint64_t kMemberSize = 24 * kMiB;
constexpr uint64_t kChunk = 64 * kKiB;
constexpr const char* kIdentity = "alice";

// ---------------------------------------------------------------------------
// Credentials, made fresh in the case's directory.

// A PSK file with a new random key for `identity`, as psktool writes it.
std::string MakePskFile(const TempDir& dir, const std::string& name,
                        const std::string& identity = kIdentity) {
  const std::string path = dir.File(name);
  RunOk({"psktool", "-u", identity, "-p", path});
  return path;
}

// X.509 directories in the layout nbdkit (server) and libnbd (client) read: a CA, a server
// certificate for 127.0.0.1 and localhost, a client certificate; and a client directory whose CA
// did not sign the server's certificate. ECDSA keys: generated in milliseconds.
struct X509Dirs {
  std::string server;          // ca-cert.pem, server-cert.pem, server-key.pem
  std::string client;          // ca-cert.pem, client-cert.pem, client-key.pem
  std::string client_no_cert;  // ca-cert.pem only
  std::string other_ca;        // another CA's ca-cert.pem, with the client certificate
};

std::string WriteTemplate(const TempDir& dir, const std::string& name, const std::string& text) {
  const std::string path = dir.File(name);
  WriteFile(path, {reinterpret_cast<const uint8_t*>(text.data()), text.size()});
  return path;
}

void MakeKey(const std::string& path) {
  RunOk({"certtool", "--generate-privkey", "--key-type=ecdsa", "--outfile", path});
}

// A certificate for `key` from `tmpl`, signed by the CA in `ca_dir` (ca-cert.pem, ca-key.pem).
void MakeSignedCert(const std::string& ca_dir, const std::string& key, const std::string& tmpl,
                    const std::string& out) {
  RunOk({"certtool", "--generate-certificate", "--load-ca-certificate", ca_dir + "/ca-cert.pem",
         "--load-ca-privkey", ca_dir + "/ca-key.pem", "--load-privkey", key, "--template", tmpl,
         "--outfile", out});
}

void MakeCa(const std::string& ca_dir, const std::string& tmpl) {
  std::filesystem::create_directories(ca_dir);
  MakeKey(ca_dir + "/ca-key.pem");
  RunOk({"certtool", "--generate-self-signed", "--load-privkey", ca_dir + "/ca-key.pem",
         "--template", tmpl, "--outfile", ca_dir + "/ca-cert.pem"});
}

X509Dirs MakeX509(const TempDir& dir) {
  const std::string ca_tmpl = WriteTemplate(
      dir, "ca.info", "cn = dst test CA\nca\ncert_signing_key\nexpiration_days = 2\n");
  const std::string server_tmpl =
      WriteTemplate(dir, "server.info",
                    "cn = localhost\ndns_name = localhost\nip_address = 127.0.0.1\ntls_www_server\n"
                    "encryption_key\nsigning_key\nexpiration_days = 2\n");
  const std::string client_tmpl = WriteTemplate(
      dir, "client.info",
      "cn = dst-aggregator\ntls_www_client\nencryption_key\nsigning_key\nexpiration_days = 2\n");
  X509Dirs d{dir.File("server"), dir.File("client"), dir.File("client-no-cert"),
             dir.File("other-ca")};
  const std::string ca = dir.File("ca"), other = dir.File("other-ca-private");
  MakeCa(ca, ca_tmpl);
  MakeCa(other, ca_tmpl);
  for (const std::string& d_path : {d.server, d.client, d.client_no_cert, d.other_ca})
    std::filesystem::create_directories(d_path);
  MakeKey(d.server + "/server-key.pem");
  MakeSignedCert(ca, d.server + "/server-key.pem", server_tmpl, d.server + "/server-cert.pem");
  MakeKey(d.client + "/client-key.pem");
  MakeSignedCert(ca, d.client + "/client-key.pem", client_tmpl, d.client + "/client-cert.pem");
  for (const std::string& to : {d.server, d.client, d.client_no_cert})
    std::filesystem::copy_file(ca + "/ca-cert.pem", to + "/ca-cert.pem");
  std::filesystem::copy_file(other + "/ca-cert.pem", d.other_ca + "/ca-cert.pem");
  for (const char* f : {"/client-cert.pem", "/client-key.pem"})
    std::filesystem::copy_file(d.client + f, d.other_ca + f);
  return d;
}

// ---------------------------------------------------------------------------
// Servers.

// Our plugin on a sparse file behind nbdkit --tls=require with `tls_flags` (--tls-psk=FILE, or
// --tls-certificates=DIR and maybe --tls-verify-peer). On teardown checks that nbdkit exited
// with 0 and no sanitizer report.
class TlsMember : public NbdkitServer {
 public:
  TlsMember(const std::string& file, const std::vector<std::string>& tls_flags,
            Transport transport = Transport::kTcp4)
      : NbdkitServer(Options(file, tls_flags, transport)) {}
  ~TlsMember() {
    const int code = Stop();
    CHECK_MESSAGE(code == 0, "nbdkit exit code " << code << "\n" << stderr_text());
    CHECK_MESSAGE(SanitizerReports().empty(), "sanitizer reports:\n" << stderr_text());
  }

  // nbds://127.0.0.1:PORT/NAME or nbds+unix:///NAME?socket=PATH.
  std::string tls_uri(std::string_view name = "") const { return "nbds" + uri(name).substr(3); }

 private:
  static NbdkitOptions Options(const std::string& file, const std::vector<std::string>& tls_flags,
                               Transport transport) {
    NbdkitOptions o =
        PluginOptions({"file=" + file, "size=" + std::to_string(kMemberSize)}, transport);
    o.nbdkit_flags = {"--tls=require"};
    o.nbdkit_flags.insert(o.nbdkit_flags.end(), tls_flags.begin(), tls_flags.end());
    return o;
  }
};

std::vector<std::string> PskFlags(const std::string& psk_file) {
  return {"--tls-psk=" + psk_file};
}

// The aggregator's options for a PSK file holding kIdentity's key.
std::vector<std::string> PskOptions(const std::string& psk_file) {
  return {"--member-tls-psk", psk_file, "--member-tls-username", kIdentity};
}

// A command (serve, create or inspect) that must fail before doing anything: exit code 1 and
// one line on stderr, the error, naming every needle.
void CheckOneError(int exit_code, const std::string& stderr_text,
                   std::initializer_list<std::string_view> needles) {
  INFO("stderr:\n" << stderr_text);
  CHECK(exit_code == 1);
  CHECK(CountOf(stderr_text, "\n") == 1);
  CHECK(stderr_text.rfind("dst-aggregator: error: ", 0) == 0);
  for (std::string_view n : needles)
    CHECK_MESSAGE(Contains(stderr_text, n), "missing: " << n);
}

void CheckServeRefused(const std::vector<std::string>& args,
                       std::initializer_list<std::string_view> needles) {
  AggregatorOptions o = ServeOptions(args);
  o.start_timeout = 20s;
  const StartFailure f = AggregatorServer::StartExpectingFailure(std::move(o));
  INFO("serve " << JoinArgv(args));
  CheckOneError(f.exit_code, f.stderr_text, needles);
}

void CheckCommandRefused(const std::vector<std::string>& args,
                         std::initializer_list<std::string_view> needles) {
  const CommandResult r = RunAggregator(args);
  INFO(JoinArgv(args) << "\nstdout:\n" << r.stdout_text);
  CheckOneError(r.exit_code, r.stderr_text, needles);
}

// ---------------------------------------------------------------------------
// Client helpers.

void WriteThrough(const std::string& uri, const Bytes& data, uint64_t offset) {
  NbdClient client;
  REQUIRE_NBD_OK(client.Connect(uri));
  REQUIRE_NBD_OK(client.Pwrite(data, offset));
  REQUIRE_NBD_OK(client.Flush());
}

Bytes ReadThrough(const std::string& uri, uint64_t count, uint64_t offset) {
  NbdClient client;
  REQUIRE_NBD_OK(client.Connect(uri));
  return client.ReadOrThrow(count, offset);
}

Argv FioVerify(const std::string& uri) {
  return {kFio,
          "--name=dst-member-tls",
          "--ioengine=nbd",
          "--uri=" + uri,
          "--rw=randrw",
          "--bs=4k",
          "--iodepth=16",
          "--size=16M",
          "--verify=crc32c",
          "--do_verify=1",
          "--verify_fatal=1",
          "--verify_state_save=0",
          "--output-format=normal"};
}

// ---------------------------------------------------------------------------

TEST_SUITE_BEGIN("aggregator_member_tls");

TEST_CASE("a checksummed volume over TLS members with pre-shared keys") {
  TempDir dir("dst-mtls-psk");
  const std::string psk = MakePskFile(dir, "members.psk");
  TlsMember m0(dir.File("m0.img"), PskFlags(psk)), m1(dir.File("m1.img"), PskFlags(psk));
  const std::vector<std::string> uris = {m0.tls_uri(), m1.tls_uri()};
  const std::vector<std::string> tls = PskOptions(psk);
  const CommandResult created =
      CreateOk(Concat({"--name", "secure", "--layout", "stripe"}, tls), uris);
  CHECK(Contains(created.stdout_text, "member 1: " + uris[1]));

  const Bytes data = RandomBytes(3 * kMiB + 4096, 7);
  {
    Served served(Concat(tls, uris), "secure");
    // The plugin's fencing works over TLS as over plain NBD.
    CHECK_FALSE(Contains(served.stderr_text(), "cannot fence"));
    CheckFioVerified(FioVerify(served.uri("secure")), 90s);
    WriteThrough(served.uri("secure"), data, 5 * kMiB);
  }
  // A second start assembles the volume over TLS again and reads the data back, checksums
  // verified.
  {
    Served served(Concat(tls, {uris[1], uris[0]}), "secure");
    CHECK(ReadThrough(served.uri("secure"), data.size(), 5 * kMiB) == data);
  }
  const CommandResult inspected = RunAggregator(Concat(Concat({"inspect"}, tls), uris));
  INFO(inspected.stderr_text);
  CHECK(inspected.exit_code == 0);
  CHECK(CountOf(inspected.stdout_text, "state:        clean") == 2);
}

TEST_CASE("a raw striped volume over nbds+unix:// members") {
  TempDir dir("dst-mtls-unix");
  const std::string psk = MakePskFile(dir, "members.psk");
  const std::vector<std::string> files = {dir.File("m0.img"), dir.File("m1.img")};
  TlsMember m0(files[0], PskFlags(psk), Transport::kUnix),
      m1(files[1], PskFlags(psk), Transport::kUnix);
  REQUIRE(m0.tls_uri().rfind("nbds+unix:///?socket=", 0) == 0);
  Served served(Concat(Concat({"--raw", "--layout", "stripe", "--chunk", "64K"}, PskOptions(psk)),
                       {m0.tls_uri(), m1.tls_uri()}));
  const Bytes data = RandomBytes(2 * kMiB, 11);
  WriteThrough(served.uri("vol0"), data, 0);
  CHECK(ReadThrough(served.uri("vol0"), data.size(), 0) == data);
  // Chunk k went to member k % 2, at (k / 2) * chunk: the stripe reached both members over TLS.
  for (uint64_t k = 0; k < data.size() / kChunk; ++k) {
    const Bytes expected(data.begin() + k * kChunk, data.begin() + (k + 1) * kChunk);
    CHECK_MESSAGE(ReadFileRange(files[k % 2], (k / 2) * kChunk, kChunk) == expected, "chunk " << k);
  }
}

TEST_CASE("X.509 members: certificates checked both ways, options from the config file") {
  TempDir dir("dst-mtls-x509");
  const X509Dirs pki = MakeX509(dir);
  // --tls-verify-peer: nbdkit requires the aggregator's client certificate.
  const std::vector<std::string> flags = {"--tls-certificates=" + pki.server, "--tls-verify-peer"};
  TlsMember m0(dir.File("m0.img"), flags), m1(dir.File("m1.img"), flags);
  // localhost and 127.0.0.1 are both in the server's certificate, which libnbd checks.
  const std::vector<std::string> uris = {m0.tls_uri(),
                                         "nbds://localhost:" + std::to_string(m1.port()) + "/"};
  CreateOk({"--name", "certs", "--member-tls-certificates", pki.client}, uris);
  const std::string config = WriteConfig(dir, "member-tls-certificates = \"" + pki.client +
                                                  "\"\n"
                                                  "member-tls-verify-peer = true\n"
                                                  "[[volume]]\n"
                                                  "members = [\"" +
                                                  uris[0] + "\", \"" + uris[1] + "\"]\n");
  Served served({"--config", config}, "certs");
  const Bytes data = RandomBytes(kMiB, 13);
  WriteThrough(served.uri("certs"), data, 40 * kMiB);  // past member 0's data area
  CHECK(ReadThrough(served.uri("certs"), data.size(), 40 * kMiB) == data);
}

TEST_CASE("X.509 credentials that do not fit the members' are refused") {
  TempDir dir("dst-mtls-x509-bad");
  const X509Dirs pki = MakeX509(dir);
  const std::vector<std::string> flags = {"--tls-certificates=" + pki.server, "--tls-verify-peer"};
  TlsMember member(dir.File("m0.img"), flags);
  const std::vector<std::string> uris = {member.tls_uri()};
  SUBCASE("a member certificate from another CA") {
    CheckServeRefused({"--member-tls-certificates", pki.other_ca, uris[0]},
                      {"member " + uris[0], "certificate verification", "TLS handshake failed"});
  }
  SUBCASE("no client certificate, which the member requires") {
    CheckServeRefused({"--raw", "--member-tls-certificates", pki.client_no_cert, uris[0]},
                      {"member " + uris[0], "TLS handshake failed"});
  }
  SUBCASE("a directory without ca-cert.pem, before anything connects") {
    CheckServeRefused({"--raw", "--member-tls-certificates", dir.path(), uris[0]},
                      {"member-tls-certificates " + dir.path(), "no readable ca-cert.pem"});
  }
}

TEST_CASE("a wrong pre-shared key: nothing starts, and the error names the member") {
  TempDir dir("dst-mtls-wrong");
  const std::string psk = MakePskFile(dir, "members.psk");
  const std::string wrong = MakePskFile(dir, "wrong.psk");  // alice too, another key
  TlsMember m0(dir.File("m0.img"), PskFlags(psk)), m1(dir.File("m1.img"), PskFlags(psk));
  const std::vector<std::string> uris = {m0.tls_uri(), m1.tls_uri()};
  SUBCASE("serve --raw: the data path connects") {
    CheckServeRefused(Concat(Concat({"--raw"}, PskOptions(wrong)), uris),
                      {"member " + uris[0], "TLS handshake failed"});
  }
  SUBCASE("serve: assembly reads the superblocks") {
    CreateOk(Concat({"--name", "v"}, PskOptions(psk)), uris);
    CheckServeRefused(Concat(PskOptions(wrong), uris),
                      {"member " + uris[0], "TLS handshake failed"});
  }
  SUBCASE("create") {
    CheckCommandRefused(Concat(Concat({"create", "--name", "v"}, PskOptions(wrong)), uris),
                        {"member " + uris[0], "TLS handshake failed"});
    CHECK(AllZero(ReadFile(dir.File("m0.img"))));
  }
  SUBCASE("an identity the member does not know") {
    const std::string bob = MakePskFile(dir, "bob.psk", "bob");
    CheckServeRefused({"--raw", "--member-tls-psk", bob, "--member-tls-username", "bob", uris[1]},
                      {"member " + uris[1], "TLS handshake failed"});
  }
}

TEST_CASE("a plain nbd:// URI for a member that requires TLS is refused clearly") {
  TempDir dir("dst-mtls-plain");
  const std::string psk = MakePskFile(dir, "members.psk");
  TlsMember member(dir.File("m0.img"), PskFlags(psk));
  SUBCASE("serve") {
    CheckServeRefused({"--raw", member.uri()},
                      {"member " + member.uri(), "requires TLS", "name it nbds://"});
  }
  SUBCASE("create") {
    CheckCommandRefused({"create", "--name", "v", member.uri()},
                        {"member " + member.uri(), "requires TLS"});
  }
}

TEST_CASE("member TLS options that cannot work are refused before anything connects") {
  TempDir dir("dst-mtls-options");
  const std::string psk = MakePskFile(dir, "members.psk");
  TlsMember member(dir.File("m0.img"), PskFlags(psk), Transport::kUnix);
  const std::string missing = dir.File("missing.psk");
  const std::vector<std::string> missing_psk = PskOptions(missing);
  SUBCASE("a missing PSK file: serve") {
    CheckServeRefused(Concat(Concat({"--raw"}, missing_psk), {member.tls_uri()}),
                      {"member-tls-psk " + missing, "No such file or directory"});
  }
  SUBCASE("a missing PSK file: serve --check-config") {
    CheckCommandRefused(
        Concat(Concat({"serve", "--check-config", "--raw"}, missing_psk), {member.tls_uri()}),
        {"member-tls-psk " + missing, "No such file or directory"});
  }
  SUBCASE("a missing PSK file: create") {
    CheckCommandRefused(Concat(Concat({"create", "--name", "v"}, missing_psk), {member.tls_uri()}),
                        {"member-tls-psk " + missing, "No such file or directory"});
  }
  SUBCASE("a missing PSK file: inspect") {
    CheckCommandRefused(Concat(Concat({"inspect", "--json"}, missing_psk), {member.tls_uri()}),
                        {"member-tls-psk " + missing, "No such file or directory"});
  }
  SUBCASE("a missing PSK file in the config file") {
    const std::string config =
        WriteConfig(dir, "member-tls-psk = \"" + missing +
                             "\"\nmember-tls-username = \"alice\"\n[[volume]]\nraw = true\n"
                             "members = [\"" +
                             member.tls_uri() + "\"]\n");
    CheckServeRefused({"--config", config}, {"member-tls-psk " + missing});
  }
  SUBCASE("no key for the identity") {
    CheckServeRefused(
        {"--raw", "--member-tls-psk", psk, "--member-tls-username", "bob", member.tls_uri()},
        {"member-tls-psk " + psk, "no key for identity 'bob'"});
  }
  SUBCASE("options but no TLS member") {
    CheckServeRefused(Concat(Concat({"--raw"}, PskOptions(psk)), {member.uri()}),
                      {"no member uses TLS"});
  }
  SUBCASE("a PSK file named in the URI") {
    const std::string uri = member.tls_uri() + "&tls-psk-file=" + psk;
    CheckServeRefused({"--raw", "--member-tls-username", "alice", uri}, {"give member-tls-psk"});
    CheckServeRefused({"--raw", uri}, {"member " + uri, "not in the URI"});
  }
}

TEST_CASE("a TLS member that restarts is reconnected over TLS") {
  TempDir dir("dst-mtls-restart");
  const std::string psk = MakePskFile(dir, "members.psk");
  TlsMember member(dir.File("m0.img"), PskFlags(psk));
  Served served(
      Concat(Concat({"--raw", "--io-timeout", "1s", "--retry-window", "30s"}, PskOptions(psk)),
             {member.tls_uri()}));
  const Bytes before = RandomBytes(256 * kKiB, 17), after = RandomBytes(256 * kKiB, 19);
  NbdClient client;
  REQUIRE_NBD_OK(client.Connect(served.uri("vol0")));
  REQUIRE_NBD_OK(client.Pwrite(before, 0));
  member.KillAndWait();
  member.Restart();
  // The same client connection: the aggregator reconnects behind it, with the same credentials.
  REQUIRE_NBD_OK(client.Pwrite(after, kMiB));
  CHECK(client.ReadOrThrow(before.size(), 0) == before);
  CHECK(client.ReadOrThrow(after.size(), kMiB) == after);
  CHECK_MESSAGE(Contains(served.stderr_text(), "reconnecting -> ready"), served.stderr_text());
}

TEST_SUITE_END();

}  // namespace
}  // namespace dst::test::aggregator_member_tls_test
