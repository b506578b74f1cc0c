#include "aggregator/cluster/etcd_url.h"

#include <doctest/doctest.h>

namespace dst::cluster::etcd_url_test {
namespace {

EtcdUrl Parse(std::string_view text) {
  EtcdUrl url;
  const Status s = ParseEtcdUrl(text, &url);
  INFO(s.ToString());
  REQUIRE(s.ok());
  return url;
}

std::string Error(std::string_view text) {
  EtcdUrl url;
  const Status s = ParseEtcdUrl(text, &url);
  REQUIRE_FALSE(s.ok());
  CHECK(s.err() == EINVAL);
  return s.message();
}

TEST_CASE("ParseEtcdUrl reads one or more endpoints and the prefix") {
  EtcdUrl url = Parse("etcd://127.0.0.1:2379/dst");
  CHECK_FALSE(url.tls);
  REQUIRE(url.endpoints.size() == 1);
  CHECK(url.endpoints[0] == EtcdEndpoint{"127.0.0.1", 2379});
  CHECK(url.prefix == "/dst");

  url = Parse("etcd://etcd-1.example:12379,etcd-2.example,[::1]:2380/dst/prod/");
  REQUIRE(url.endpoints.size() == 3);
  CHECK(url.endpoints[0] == EtcdEndpoint{"etcd-1.example", 12379});
  CHECK(url.endpoints[1] == EtcdEndpoint{"etcd-2.example", kDefaultEtcdPort});
  CHECK(url.endpoints[2] == EtcdEndpoint{"::1", 2380});
  CHECK(url.prefix == "/dst/prod");
  CHECK(url.ToString() == "etcd://etcd-1.example:12379,etcd-2.example:2379,[::1]:2380/dst/prod");

  url = Parse("etcds://10.0.0.1/cluster-a");
  CHECK(url.tls);
  CHECK(url.ToString() == "etcds://10.0.0.1:2379/cluster-a");
}

TEST_CASE("ParseEtcdUrl says what is wrong with a URL it refuses") {
  CHECK(Error("http://127.0.0.1:2379/dst").find("the scheme must be etcd:// or etcds://") !=
        std::string::npos);
  CHECK(Error("etcd:///dst").find("no HOST") != std::string::npos);
  CHECK(Error("etcd://127.0.0.1:2379").find("no PREFIX") != std::string::npos);
  CHECK(Error("etcd://127.0.0.1:2379/").find("no PREFIX") != std::string::npos);
  CHECK(Error("etcd://a:1,,b:2/dst").find("an empty host in the list") != std::string::npos);
  CHECK(Error("etcd://a:1,/dst").find("an empty host in the list") != std::string::npos);
  CHECK(Error("etcd://a:0/dst").find("port \"0\" of a is not a number from 1 to 65535") !=
        std::string::npos);
  CHECK(Error("etcd://a:65536/dst").find("not a number from 1 to 65535") != std::string::npos);
  CHECK(Error("etcd://a:x/dst").find("port \"x\"") != std::string::npos);
  CHECK(Error("etcd://a:/dst").find("port \"\"") != std::string::npos);
  CHECK(Error("etcd://a:1,a:1/dst").find("a:1 is listed twice") != std::string::npos);
  CHECK(Error("etcd://[::1/dst").find("'[' without ']'") != std::string::npos);
  CHECK(Error("etcd://[::1]x/dst").find("unexpected \"x\"") != std::string::npos);
  CHECK(Error("etcd://[host]/dst").find("not a bracketed IPv6 address") != std::string::npos);
  CHECK(Error("etcd://user:secret@a/dst").find("credentials do not belong in the URL") !=
        std::string::npos);
  CHECK(Error("etcd://h!st/dst").find("\"h!st\" is not a host name or address") !=
        std::string::npos);
  CHECK(Error("etcd://a/dst?x=1").find("queries and fragments") != std::string::npos);
  CHECK(Error("etcd://a/dst//prod").find("an empty segment") != std::string::npos);
  CHECK(Error("etcd://a/ds t").find("spaces or control characters") != std::string::npos);
  CHECK(Error("etcd://a/ds%20t").find("'%'") != std::string::npos);
  // Every message quotes the URL and shows the form.
  const std::string message = Error("etcd://a");
  CHECK(message.starts_with("cluster URL \"etcd://a\": "));
  CHECK(message.find("etcd://HOST[:PORT][,HOST[:PORT]...]/PREFIX") != std::string::npos);
}

}  // namespace
}  // namespace dst::cluster::etcd_url_test
