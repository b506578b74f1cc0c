#include "aggregator/server/tls.h"

#include <doctest/doctest.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>

namespace dst::server::tls_test {
namespace {

// A PSK file with `text` in a fresh temporary path, removed at scope end.
class TempPskFile {
 public:
  explicit TempPskFile(const std::string& text) {
    char name[] = "/tmp/dst-tls-test.XXXXXX";
    const int fd = ::mkstemp(name);
    REQUIRE(fd >= 0);
    ::close(fd);
    path_ = name;
    std::ofstream(path_) << text;
  }
  ~TempPskFile() { std::remove(path_.c_str()); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

TEST_CASE("TLS modes parse and print") {
  TlsMode mode;
  for (const char* name : {"off", "on", "require"}) {
    REQUIRE(ParseTlsMode(name, &mode));
    CHECK(std::string(TlsModeName(mode)) == name);
  }
  CHECK_FALSE(ParseTlsMode("yes", &mode));
  CHECK_FALSE(ParseTlsMode("", &mode));
}

TEST_CASE("a PSK file as psktool writes it") {
  const TempPskFile file("alice:00ff10aB\n\nbob:0102030405060708090a0b0c0d0e0f10\n");
  PskKeys keys;
  REQUIRE(LoadPskFile(file.path(), &keys).ok());
  REQUIRE(keys.size() == 2);
  CHECK(keys.at("alice") == std::vector<uint8_t>{0x00, 0xff, 0x10, 0xab});
  CHECK(keys.at("bob").size() == 16);
}

TEST_CASE("bad PSK files are refused with file and line") {
  const struct {
    const char* text;
    const char* message;
  } cases[] = {
      {"alice\n", ":1: expected identity:hexkey"},
      {":00ff\n", ":1: expected identity:hexkey"},
      {"alice:00ff\nbob:0g\n", ":2: the key is not an even number of hex digits"},
      {"alice:abc\n", ":1: the key is not an even number of hex digits"},
      {"alice:\n", ":1: the key is not an even number of hex digits"},
      {"\n", ": no key in the file"},
  };
  for (const auto& c : cases) {
    const TempPskFile file(c.text);
    PskKeys keys;
    const Status s = LoadPskFile(file.path(), &keys);
    CHECK_FALSE(s.ok());
    CHECK_MESSAGE(s.message().find(file.path() + c.message) != std::string::npos, s.message());
  }
  PskKeys keys;
  const Status missing = LoadPskFile("/nonexistent/keys.psk", &keys);
  CHECK(missing.message() == "--tls-psk /nonexistent/keys.psk: No such file or directory");
}

TEST_CASE("credentials and modes must agree") {
  TlsConfig c;
  CHECK(CheckTlsConfig(c).ok());
  c.psk_file = "k.psk";
  CHECK(CheckTlsConfig(c).message().find("--tls is off") != std::string::npos);
  c.mode = TlsMode::kRequire;
  CHECK(CheckTlsConfig(c).ok());
  c.certificates_dir = "pki";
  CHECK(CheckTlsConfig(c).message().find("give only one") != std::string::npos);
  c.psk_file.clear();
  c.verify_peer = true;
  CHECK(CheckTlsConfig(c).ok());
  c.certificates_dir.clear();
  CHECK(CheckTlsConfig(c).message() ==
        "--tls=require needs --tls-psk FILE or --tls-certificates DIR");
  c.psk_file = "k.psk";
  CHECK(CheckTlsConfig(c).message().find("needs --tls-certificates") != std::string::npos);
}

TEST_CASE("a server context from a PSK file finds keys by identity") {
  const TempPskFile file("alice:00ff10ab\n");
  TlsConfig c;
  c.mode = TlsMode::kOn;
  c.psk_file = file.path();
  std::unique_ptr<ServerTls> tls;
  REQUIRE(ServerTls::Create(c, &tls).ok());
  CHECK(tls->mode() == TlsMode::kOn);
  REQUIRE(tls->Find("alice") != nullptr);
  CHECK(tls->Find("alice")->second.size() == 4);
  CHECK(tls->Find("mallory") == nullptr);
}

}  // namespace
}  // namespace dst::server::tls_test
