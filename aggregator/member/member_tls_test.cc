// MemberTls: the checks made before anything connects, on files in a temporary directory, and
// what ApplyMemberTls leaves on a libnbd handle (nothing is connected).
#include "aggregator/member/member_tls.h"

#include <doctest/doctest.h>
#include <libnbd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>

namespace dst::member::member_tls_test {
namespace {

constexpr const char* kKey = "c6a68f622cdf09cefbc7e0411e367d04e9320958be656b57a0a13de668b9ffca";
const std::vector<std::string> kTlsMember = {"nbds+unix:///disk0?socket=/run/n0.sock"};

// A directory removed with its contents at the end of the case.
class Dir {
 public:
  Dir() {
    std::string pattern = std::filesystem::temp_directory_path() / "dst-member-tls-XXXXXX";
    REQUIRE(::mkdtemp(pattern.data()) != nullptr);
    path_ = pattern;
  }
  ~Dir() { std::filesystem::remove_all(path_); }
  // Mode 0600: key files must be private to their owner.
  std::string Write(const std::string& name, const std::string& text) const {
    const std::string path = path_ + "/" + name;
    std::ofstream(path) << text;
    std::filesystem::permissions(
        path, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
    return path;
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

bool Contains(const Status& s, std::string_view needle) {
  return s.message().find(needle) != std::string::npos;
}

TEST_CASE("TLS URIs and their user part") {
  CHECK(IsTlsUri("nbds://10.1.0.5/disk0"));
  CHECK(IsTlsUri("nbds+unix:///disk0?socket=/run/n0.sock"));
  CHECK_FALSE(IsTlsUri("nbd://10.1.0.5/disk0"));
  CHECK_FALSE(IsTlsUri("nbd+unix:///disk0?socket=/run/n0.sock"));
  CHECK(UriUser("nbds://alice@10.1.0.5:10810/disk0") == "alice");
  CHECK(UriUser("nbds+unix://bob@/disk0?socket=/run/n0.sock") == "bob");
  CHECK(UriUser("nbds://10.1.0.5/disk@0") == "");
  CHECK(UriUser("nbds+unix:///disk0?socket=/run/a@b.sock") == "");
}

TEST_CASE("no options: nothing to check, TLS members use libnbd's defaults") {
  CHECK(CheckMemberTls({}, kTlsMember).ok());
  CHECK(CheckMemberTls({}, {"nbd://h/x"}).ok());
}

TEST_CASE("options without a TLS member are refused") {
  Dir dir;
  MemberTls tls;
  tls.psk_file = dir.Write("keys.psk", std::string("alice:") + kKey + "\n");
  tls.username = "alice";
  const Status s = CheckMemberTls(tls, {"nbd://h/x", "nbd+unix:///y?socket=/s"});
  CHECK(s.err() == EINVAL);
  CHECK(Contains(s, "no member uses TLS"));
  // One TLS member is enough; plain members beside it stay plain.
  CHECK(CheckMemberTls(tls, {"nbd://h/x", "nbds://h/y"}).ok());
}

TEST_CASE("a PSK file must hold a key for the identity") {
  Dir dir;
  const std::string keys =
      dir.Write("keys.psk", std::string("bob:00ff\r\nalice:") + kKey + "\ncarol:abc\n");
  MemberTls tls;
  tls.psk_file = keys;
  tls.username = "alice";
  CHECK(CheckMemberTls(tls, kTlsMember).ok());

  SUBCASE("missing file") {
    tls.psk_file = dir.path() + "/nope.psk";
    const Status s = CheckMemberTls(tls, kTlsMember);
    CHECK(s.err() == ENOENT);
    CHECK(Contains(s, "member-tls-psk " + tls.psk_file));
    CHECK(Contains(s, "No such file or directory"));
  }
  SUBCASE("unreadable file") {
    if (::geteuid() == 0) return;  // root reads anything
    ::chmod(keys.c_str(), 0);
    CHECK(CheckMemberTls(tls, kTlsMember).err() == EACCES);
  }
  SUBCASE("a directory") {
    tls.psk_file = dir.path();
    CHECK(Contains(CheckMemberTls(tls, kTlsMember), "not a PSK file"));
  }
  SUBCASE("no key for the identity") {
    tls.username = "dave";
    const Status s = CheckMemberTls(tls, kTlsMember);
    CHECK(s.err() == ENOENT);
    CHECK(Contains(s, "no key for identity 'dave'"));
  }
  SUBCASE("an identity that is a prefix of another is not it") {
    tls.username = "ali";
    CHECK(Contains(CheckMemberTls(tls, kTlsMember), "no key for identity 'ali'"));
  }
  SUBCASE("a key that is not hex") {
    tls.username = "carol";
    CHECK(Contains(CheckMemberTls(tls, kTlsMember), "not an even number of hex digits"));
  }
  SUBCASE("the URI's user wins over member-tls-username, as in libnbd") {
    CHECK(CheckMemberTls(tls, {"nbds://bob@h/x"}).ok());
    CHECK(Contains(CheckMemberTls(tls, {"nbds://dave@h/x"}), "no key for identity 'dave'"));
  }
  SUBCASE("member-tls-username without member-tls-psk") {
    tls.psk_file.clear();
    CHECK(Contains(CheckMemberTls(tls, kTlsMember), "give member-tls-psk"));
  }
  SUBCASE("PSK and X.509 together") {
    tls.certificates_dir = dir.path();
    CHECK(Contains(CheckMemberTls(tls, kTlsMember), "give one"));
  }
}

TEST_CASE("a certificates directory must have the layout libnbd reads") {
  Dir dir;
  MemberTls tls;
  tls.certificates_dir = dir.path();
  CHECK(Contains(CheckMemberTls(tls, kTlsMember), "no readable ca-cert.pem"));
  dir.Write("ca-cert.pem", "x");
  CHECK(CheckMemberTls(tls, kTlsMember).ok());
  dir.Write("client-cert.pem", "x");
  CHECK(Contains(CheckMemberTls(tls, kTlsMember), "go together"));
  dir.Write("client-key.pem", "x");
  CHECK(CheckMemberTls(tls, kTlsMember).ok());
  tls.certificates_dir = dir.path() + "/ca-cert.pem";
  CHECK(Contains(CheckMemberTls(tls, kTlsMember), "not a directory"));
  tls.certificates_dir = dir.path() + "/nope";
  CHECK(CheckMemberTls(tls, kTlsMember).err() == ENOENT);
}

struct HandleCloser {
  void operator()(nbd_handle* h) const { nbd_close(h); }
};

TEST_CASE("ApplyMemberTls: TLS required for TLS members only, with the credentials") {
  const std::unique_ptr<nbd_handle, HandleCloser> h(nbd_create());
  REQUIRE(h);
  MemberTls tls;
  tls.psk_file = "/etc/dst/members.psk";
  tls.username = "agg";
  tls.verify_peer = false;
  REQUIRE(ApplyMemberTls(h.get(), tls, "nbd://h/x").ok());
  CHECK(nbd_get_tls(h.get()) == LIBNBD_TLS_DISABLE);
  REQUIRE(ApplyMemberTls(h.get(), tls, "nbds://h/x").ok());
  CHECK(nbd_get_tls(h.get()) == LIBNBD_TLS_REQUIRE);
  char* user = nbd_get_tls_username(h.get());
  REQUIRE(user != nullptr);
  CHECK(std::string(user) == "agg");
  std::free(user);
  CHECK(nbd_get_tls_verify_peer(h.get()) == 0);
}

TEST_CASE("a PSK file named in the URI is refused at connect") {
  const std::unique_ptr<nbd_handle, HandleCloser> h(nbd_create());
  REQUIRE(h);
  REQUIRE(ApplyMemberTls(h.get(), {}, "nbds+unix:///x?socket=/nonexistent.sock").ok());
  CHECK(nbd_aio_connect_uri(
            h.get(), "nbds+unix:///x?socket=/nonexistent.sock&tls-psk-file=/etc/k.psk") == -1);
  CHECK(std::string(nbd_get_error()).find("tls-psk-file") != std::string::npos);
}

TEST_CASE("connect failures get a hint where libnbd's message does not say what to do") {
  const Status handshake = Status::Error(
      EIO, "gnutls_handshake: The TLS connection was non-properly terminated. (-1/1)");
  CHECK(Contains(ExplainConnectFailure(handshake, "nbds://h/x"), "check the PSK identity and key"));
  CHECK(ExplainConnectFailure(handshake, "nbds://h/x").err() == EIO);
  CHECK(ExplainConnectFailure(handshake, "nbd://h/x").message() == handshake.message());
  const Status tls_required = Status::Error(
      ENOTSUP, "server refused export 'x': handshake: server requires TLS encryption first");
  CHECK(Contains(ExplainConnectFailure(tls_required, "nbd://h/x"), "name it nbds://"));
  const Status local_file = Status::Error(
      EPERM, "local file access (tls-psk-file) is not allowed, call nbd_set_uri_allow_local_file");
  CHECK(Contains(ExplainConnectFailure(local_file, "nbds://h/x?tls-psk-file=/k"),
                 "--member-tls-psk"));
  const Status refused = Status::Error(ECONNREFUSED, "connect: Connection refused");
  CHECK(ExplainConnectFailure(refused, "nbds://h/x").message() == refused.message());
}

}  // namespace
}  // namespace dst::member::member_tls_test
