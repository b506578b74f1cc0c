// Access rules of nbdkit-dst-plugin, decided on the real peer address of a
// real connection: TCP over 127.0.0.1 (and ::1 when configured), and Unix
// sockets (the `unix` rule).
#include <libnbd.h>

#include <optional>

#include "tests/integration/plugin_fixture.h"

namespace dst::test {
namespace {

TEST_SUITE_BEGIN("plugin_access");

std::string ExportToml(const TempDir& dir, const std::string& name, const std::string& rules) {
  return "[[export]]\nname = \"" + name + "\"\nfile = \"" + dir.File(name + ".img") +
         "\"\nsize = \"1M\"\naccess = [" + rules + "]\n";
}

// Expects full read-write service of the export.
void ExpectReadWrite(const std::string& uri) {
  NbdClient c;
  REQUIRE_NBD_OK(c.Connect(uri));
  CHECK_FALSE(c.IsReadOnly());
  const Bytes data = RandomBytes(4096, 11);
  CHECK_NBD_OK(c.Pwrite(data, 0));
  CHECK(c.ReadOrThrow(4096, 0) == data);
  CHECK_NBD_OK(c.Trim(4096, 0));
  CHECK_NBD_OK(c.Zero(4096, 4096));
}

// Expects a read-only export whose server refuses modifications with EPERM.
void ExpectReadOnly(const std::string& uri) {
  NbdClient c;
  REQUIRE_NBD_OK(c.Connect(uri));
  CHECK(c.IsReadOnly());
  CHECK(c.ReadOrThrow(4096, 0).size() == 4096);
  REQUIRE_NBD_OK(c.SetStrictMode(0));
  CHECK_NBD_ERR(c.Pwrite(Bytes(4096, 1), 0), EPERM);
  CHECK_NBD_ERR(c.Trim(4096, 0), EPERM);
  CHECK_NBD_ERR(c.Zero(4096, 0), EPERM);
}

// Expects the export to be refused at NBD_OPT_GO: no data connection.
void ExpectDenied(const std::string& uri) {
  NbdClient c;
  CHECK_NBD_FAILS(c.Connect(uri));
}

TEST_CASE("TCP 127.0.0.1: rw, ro, deny and no-match rules") {
  TempDir dir;
  const std::string toml =
      ExportToml(dir, "rw", "\"10.0.0.0/8 deny\", \"127.0.0.0/8 rw\"") +
      ExportToml(dir, "ro", "\"127.0.0.0/8 ro\", \"all rw\"") +
      ExportToml(dir, "deny", "\"127.0.0.0/8 deny\", \"all rw\"") +   // first match wins
      ExportToml(dir, "nomatch", "\"10.0.0.0/8 rw\", \"unix rw\"") +  // no match: deny
      ExportToml(dir, "host", "\"127.0.0.1/32 rw\"") + ExportToml(dir, "open", "");
  PluginServer server({"config=" + WriteConfig(dir, toml)}, Transport::kTcp4);
  SUBCASE("rw") {
    ExpectReadWrite(server.uri("rw"));
  }
  SUBCASE("ro") {
    ExpectReadOnly(server.uri("ro"));
  }
  SUBCASE("deny") {
    ExpectDenied(server.uri("deny"));
  }
  SUBCASE("no match") {
    ExpectDenied(server.uri("nomatch"));
  }
  SUBCASE("/32") {
    ExpectReadWrite(server.uri("host"));
  }
  SUBCASE("no rules: everyone rw") {
    ExpectReadWrite(server.uri("open"));
  }
  SUBCASE("a denied client can still open another export") {
    NbdClient c;
    REQUIRE_NBD_OK(c.ConnectOptMode(server.uri()));
    REQUIRE_NBD_OK(c.SetExportName("deny"));
    CHECK_NBD_FAILS(c.OptGo());
    REQUIRE_NBD_OK(c.SetExportName("rw"));
    CHECK_NBD_OK(c.OptGo());
  }
}

TEST_CASE("Unix socket: the unix rule") {
  TempDir dir;
  const std::string file = dir.File("u.img");
  SUBCASE("unix rw") {
    PluginServer server({"file=" + file, "size=1M", "access=unix rw"});
    ExpectReadWrite(server.uri());
  }
  SUBCASE("unix ro") {
    PluginServer server({"file=" + file, "size=1M", "access=unix ro"});
    ExpectReadOnly(server.uri());
  }
  SUBCASE("unix deny") {
    PluginServer server({"file=" + file, "size=1M", "access=unix deny", "access=all rw"});
    ExpectDenied(server.uri());
  }
  SUBCASE("address rules do not match Unix clients") {
    PluginServer server({"file=" + file, "size=1M", "access=127.0.0.0/8 rw", "access=::/0 rw"});
    ExpectDenied(server.uri());
  }
  SUBCASE("all matches Unix clients") {
    PluginServer server({"file=" + file, "size=1M", "access=all ro"});
    ExpectReadOnly(server.uri());
  }
}

TEST_CASE("TCP ::1: IPv6 rules") {
  if (!Ipv6LoopbackAvailable()) {
    MESSAGE("skipped: ::1 is not configured on this host");
    return;
  }
  TempDir dir;
  const std::string toml = ExportToml(dir, "rw", "\"::1/128 rw\"") +
                           ExportToml(dir, "ro", "\"::/0 ro\"") +
                           ExportToml(dir, "v4only", "\"127.0.0.0/8 rw\"");
  PluginServer server({"config=" + WriteConfig(dir, toml)}, Transport::kTcp6);
  SUBCASE("::1/128 rw") {
    ExpectReadWrite(server.uri("rw"));
  }
  SUBCASE("::/0 ro") {
    ExpectReadOnly(server.uri("ro"));
  }
  SUBCASE("an IPv4 rule does not match ::1") {
    ExpectDenied(server.uri("v4only"));
  }
}

TEST_CASE("TCP 127.0.0.1 seen as ::ffff:127.0.0.1: IPv4 rules match IPv4-mapped peers") {
  if (!Ipv4MappedListenAvailable()) {
    MESSAGE("skipped: cannot listen on an IPv6 dual-stack socket here");
    return;
  }
  TempDir dir;
  const std::string toml = ExportToml(dir, "rw", "\"127.0.0.0/8 rw\"") +
                           ExportToml(dir, "ro", "\"127.0.0.1/32 ro\", \"all rw\"") +
                           ExportToml(dir, "deny", "\"127.0.0.0/8 deny\", \"all rw\"");
  PluginServer server({"config=" + WriteConfig(dir, toml)}, Transport::kTcp4MappedV6);
  SUBCASE("127.0.0.0/8 rw") {
    ExpectReadWrite(server.uri("rw"));
  }
  SUBCASE("127.0.0.1/32 ro") {
    ExpectReadOnly(server.uri("ro"));
  }
  SUBCASE("127.0.0.0/8 deny") {
    ExpectDenied(server.uri("deny"));
  }
}

// The audit's dead rules: written in the IPv4-mapped form they never matched
// anyone, so a deny before `all rw` let the client write. They now match the
// IPv4 client, whether it arrives as 127.0.0.1 or as ::ffff:127.0.0.1.
std::string MappedRulesToml(const TempDir& dir) {
  return ExportToml(dir, "mdeny", "\"::ffff:127.0.0.1 deny\", \"all rw\"") +
         ExportToml(dir, "mro", "\"::ffff:127.0.0.0/104 ro\", \"all rw\"") +
         ExportToml(dir, "mrw", "\"::ffff:127.0.0.1/128 rw\"");
}

void ExpectMappedRulesApply(const PluginServer& server) {
  SUBCASE("::ffff:127.0.0.1 deny before all rw") {
    ExpectDenied(server.uri("mdeny"));
  }
  SUBCASE("::ffff:127.0.0.0/104 ro before all rw") {
    ExpectReadOnly(server.uri("mro"));
  }
  SUBCASE("::ffff:127.0.0.1/128 rw alone") {
    ExpectReadWrite(server.uri("mrw"));
  }
}

TEST_CASE("rules in the IPv4-mapped form apply to 127.0.0.1 on a dual-stack socket") {
  REQUIRE_MESSAGE(Ipv4MappedListenAvailable(), "cannot listen on an IPv6 dual-stack socket here");
  TempDir dir;
  PluginServer server({"config=" + WriteConfig(dir, MappedRulesToml(dir))},
                      Transport::kTcp4MappedV6);
  ExpectMappedRulesApply(server);
}

TEST_CASE("rules in the IPv4-mapped form apply to 127.0.0.1 on an IPv4 socket") {
  TempDir dir;
  PluginServer server({"config=" + WriteConfig(dir, MappedRulesToml(dir))}, Transport::kTcp4);
  ExpectMappedRulesApply(server);
}

TEST_CASE("an IPv4-mapped rule wider than the mapped space stops nbdkit at start") {
  TempDir dir;
  const StartFailure f =
      ExpectStartFailure({"file=" + dir.File("x.img"), "size=1M", "access=::ffff:0:0/80 deny"});
  CHECK(f.exit_code != 0);
  CHECK_FALSE(LineWithAll(f.stderr_text, {"access='::ffff:0:0/80 deny'",
                                          "an IPv4-mapped range needs a prefix of 96 to 128"})
                  .empty());
}

TEST_SUITE_END();

}  // namespace
}  // namespace dst::test
