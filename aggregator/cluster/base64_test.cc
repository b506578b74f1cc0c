#include "aggregator/cluster/base64.h"

#include <doctest/doctest.h>

namespace dst::cluster::base64_test {
namespace {

TEST_CASE("Base64 round trips RFC 4648's test vectors and binary bytes") {
  const std::pair<std::string, std::string> vectors[] = {
      {"", ""},
      {"f", "Zg=="},
      {"fo", "Zm8="},
      {"foo", "Zm9v"},
      {"foob", "Zm9vYg=="},
      {"fooba", "Zm9vYmE="},
      {"foobar", "Zm9vYmFy"},
  };
  for (const auto& [plain, encoded] : vectors) {
    CHECK(Base64Encode(plain) == encoded);
    CHECK(Base64Decode(encoded) == plain);
  }
  std::string binary;
  for (int i = 0; i < 256; ++i)
    binary += static_cast<char>(i);
  CHECK(Base64Decode(Base64Encode(binary)) == binary);
}

TEST_CASE("Base64Decode refuses what is not canonical padded base64") {
  CHECK_FALSE(Base64Decode("Zg"));    // no padding
  CHECK_FALSE(Base64Decode("Zg=a"));  // padding in the middle
  CHECK_FALSE(Base64Decode("Zg==Zg=="));
  CHECK_FALSE(Base64Decode("Z==="));
  CHECK_FALSE(Base64Decode("Zh=="));  // non-zero bits dropped by the padding
  CHECK_FALSE(Base64Decode("Zm9v!A=="));
  CHECK_FALSE(Base64Decode("Zm9-"));  // base64url is another alphabet
}

}  // namespace
}  // namespace dst::cluster::base64_test
