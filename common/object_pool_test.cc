#include "common/object_pool.h"

#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <set>
#include <thread>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#endif

namespace dst {
namespace {

struct Sample {
  uint64_t words[8];
};

TEST_CASE("a freed block is the next one taken of its size class") {
  void* first = pool::Allocate(100);
  pool::Deallocate(first, 100);
  void* second = pool::Allocate(120);  // same 32-byte class: 97..128
  CHECK(second == first);
  pool::Deallocate(second, 120);
}

TEST_CASE("blocks of a class are large enough for any size in it") {
  for (size_t bytes : {1u, 32u, 33u, 1000u, 1024u}) {
    void* block = pool::Allocate(bytes);
    std::memset(block, 0xab, bytes);  // the sanitized build checks the bounds
    pool::Deallocate(block, bytes);
  }
}

TEST_CASE("objects larger than the largest class are not kept") {
  const size_t idle = pool::IdleBytes();
  void* large = pool::Allocate(pool::kMaxPooledBytes + 1);
  pool::Deallocate(large, pool::kMaxPooledBytes + 1);
  CHECK(pool::IdleBytes() == idle);
}

TEST_CASE("free blocks at rest are bounded per thread and in the depot") {
  std::thread([] {
    std::vector<void*> blocks;
    const size_t count = 2 * pool::kMaxDepotBytes / pool::kMaxPooledBytes;
    for (size_t i = 0; i < count; ++i)
      blocks.push_back(pool::Allocate(pool::kMaxPooledBytes));
    for (void* block : blocks)
      pool::Deallocate(block, pool::kMaxPooledBytes);
    CHECK(pool::IdleBytes() <= pool::kMaxPerClass * pool::kMaxPooledBytes);
    CHECK(pool::DepotBytes() <= pool::kMaxDepotBytes);
    // Emptied again, so that the depot has room for the next test: every block is taken back
    // and freed as the allocator's own.
    for (void*& block : blocks)
      block = pool::Allocate(pool::kMaxPooledBytes);
    CHECK(pool::DepotBytes() == 0);
    for (void* block : blocks)
      ::operator delete(block);
  }).join();
}

TEST_CASE("blocks freed on one thread are taken again on another, through the depot") {
  // As handlers posted from one loop to another are: taken here, freed there.
  constexpr size_t kBytes = 480;  // a class no other test uses
  std::vector<void*> blocks;
  std::thread([&] {
    for (size_t i = 0; i < 4 * pool::kBatch; ++i)
      blocks.push_back(pool::Allocate(kBytes));
  }).join();
  std::thread([&] {
    for (void* block : blocks)
      pool::Deallocate(block, kBytes);
  }).join();  // its pool ends: what it kept goes to the depot too
  std::set<void*> freed(blocks.begin(), blocks.end());
  std::thread([&] {
    std::vector<void*> again;
    for (size_t i = 0; i < 4 * pool::kBatch; ++i)
      again.push_back(pool::Allocate(kBytes));
    for (void* block : again) {
      CHECK(freed.count(block) == 1);
      pool::Deallocate(block, kBytes);
    }
  }).join();
}

TEST_CASE("MakePooled builds a shared object whose block is reused once it is released") {
  auto one = MakePooled<Sample>();
  one->words[7] = 9;
  const void* where = one.get();
  one.reset();
  auto two = MakePooled<Sample>();
  CHECK(static_cast<const void*>(two.get()) == where);
}

#if defined(__SANITIZE_ADDRESS__)
TEST_CASE("an idle block is poisoned until it is taken again") {
  void* block = pool::Allocate(200);
  pool::Deallocate(block, 200);
  CHECK(__asan_address_is_poisoned(block));
  void* again = pool::Allocate(200);
  REQUIRE(again == block);
  CHECK_FALSE(__asan_address_is_poisoned(again));
  pool::Deallocate(again, 200);
}
#endif

}  // namespace
}  // namespace dst
