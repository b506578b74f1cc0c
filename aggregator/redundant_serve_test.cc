#include "aggregator/redundant_serve.h"

#include <set>

#include <doctest/doctest.h>

#include "aggregator/serve_config.h"

namespace dst::aggregator::redundant_serve_test {
namespace {

constexpr integrity::Uuid kVolume = {0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77,
                                     0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff};

TEST_CASE("the fence session of a slot is the BLAKE2b of the volume UUID and the slot") {
  // printf '\x00\x11\x22\x33\x44\x55\x66\x77\x88\x99\xaa\xbb\xcc\xdd\xee\xff\x00\x00\x00\x01' |
  //   b2sum -l 256 | cut -c1-32
  CHECK(FenceSession(kVolume, 1) == "e3ad3e6059fdde027c7b2c77a26f1443");
  const std::string s0 = FenceSession(kVolume, 0);
  CHECK(s0.size() == 32);
  CHECK(s0.find_first_not_of("0123456789abcdef") == std::string::npos);
  CHECK(FenceSession(kVolume, 0) == s0);  // the same in every aggregator
  std::set<std::string> sessions;
  for (uint32_t slot = 0; slot < 64; ++slot)
    sessions.insert(FenceSession(kVolume, slot));
  CHECK(sessions.size() == 64);
  integrity::Uuid other = kVolume;
  other[15] ^= 1;
  CHECK(FenceSession(other, 0) != s0);
}

TEST_CASE(
    "members of a redundant volume fence under their slot's session and the ownership epoch") {
  ServeConfig config;
  RedundantPlan plan;
  plan.view.volume_uuid = kVolume;
  plan.view.ownership_epoch = 3;
  const member::TransactionOptions o = RedundantMemberOptions(config, plan, 1);
  CHECK(o.fence_session == FenceSession(kVolume, 1));
  CHECK(o.fence_epoch_base == (uint64_t{3} << 32));
  CHECK(o.fencing == member::FencingMode::kRequire);  // the default for redundant volumes
  config.transactions.fencing = member::FencingMode::kAuto;
  config.fencing_given = true;  // an explicit --fencing wins
  CHECK(RedundantMemberOptions(config, plan, 1).fencing == member::FencingMode::kAuto);
}

TEST_CASE("the run's owner UUID is made once") {
  CHECK(&RunOwnerUuid() == &RunOwnerUuid());
  CHECK(RunOwnerUuid() != integrity::Uuid{});
}

}  // namespace
}  // namespace dst::aggregator::redundant_serve_test
