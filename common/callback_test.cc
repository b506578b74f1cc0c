#include "common/callback.h"

#include <doctest/doctest.h>

#include <array>
#include <memory>
#include <stdexcept>
#include <string>

#include "common/object_pool.h"

namespace dst {
namespace {

TEST_CASE("a callback calls what it holds, with its arguments and result") {
  Callback<int(int, int)> add = [](int a, int b) { return a + b; };
  CHECK(static_cast<bool>(add));
  CHECK(add(2, 3) == 5);
}

TEST_CASE("an empty callback is false, equal to nullptr, and throws when called") {
  Callback<void(int)> empty;
  CHECK_FALSE(static_cast<bool>(empty));
  CHECK(empty == nullptr);
  CHECK_THROWS_AS(empty(1), std::bad_function_call);
  std::function<void(int)> none;
  Callback<void(int)> from_none = none;
  CHECK(from_none == nullptr);
  void (*null_pointer)(int) = nullptr;
  Callback<void(int)> from_null = null_pointer;
  CHECK(from_null == nullptr);
}

TEST_CASE("two shared_ptrs are captured in place: no block taken, none left behind") {
  auto connection = std::make_shared<int>(1);
  auto request = std::make_shared<std::string>("read");
  const size_t idle = pool::IdleBytes();
  {
    Callback<void(int)> done = [connection, request](int) {};
    CHECK(pool::IdleBytes() == idle);
    CHECK(connection.use_count() == 2);
    Callback<void(int)> moved = std::move(done);
    CHECK(done == nullptr);
    CHECK(connection.use_count() == 2);
    Callback<void(int)> copied = moved;
    CHECK(connection.use_count() == 3);
  }
  CHECK(connection.use_count() == 1);
  CHECK(request.use_count() == 1);
}

TEST_CASE("a large callable lives in a pooled block, which goes back to the pool") {
  std::array<uint64_t, 16> big{};
  big[15] = 7;
  auto owner = std::make_shared<int>(0);
  uint64_t seen = 0;
  const size_t idle_before = pool::IdleBytes();
  {
    Callback<void()> call = [big, owner, &seen] { seen = big[15]; };
    CHECK(owner.use_count() == 2);
    Callback<void()> copy = call;  // a second block
    CHECK(owner.use_count() == 3);
    Callback<void()> moved = std::move(call);  // the block changes hands, no copy
    CHECK(owner.use_count() == 3);
    moved();
    CHECK(seen == 7);
  }
  CHECK(owner.use_count() == 1);
  CHECK(pool::IdleBytes() >= idle_before + sizeof(big));  // kept for the next one
}

// Copies throw once `copies_left` reaches zero.
struct CopyMayThrow {
  std::shared_ptr<int> owner;
  int* copies_left;
  CopyMayThrow(std::shared_ptr<int> o, int* left) : owner(std::move(o)), copies_left(left) {}
  CopyMayThrow(const CopyMayThrow& other) : owner(other.owner), copies_left(other.copies_left) {
    if (*copies_left == 0) throw std::runtime_error("copy");
    --*copies_left;
  }
  CopyMayThrow(CopyMayThrow&&) noexcept = default;
  void operator()() const {}
};

TEST_CASE("a copy that throws leaves the original whole and nothing half made") {
  auto owner = std::make_shared<int>(0);
  int copies_left = 0;
  Callback<void()> original = CopyMayThrow(owner, &copies_left);
  CHECK_THROWS_AS(Callback<void()>{original}, std::runtime_error);
  CHECK(owner.use_count() == 2);  // the original's, and nothing else
  original();
  Callback<void()> target = [] {};
  CHECK_THROWS_AS(target = original, std::runtime_error);
  CHECK(target != nullptr);  // kept what it had
  CHECK(owner.use_count() == 2);
}

TEST_CASE("mutable state of the callable persists between calls") {
  Callback<int()> counter = [n = 0]() mutable { return ++n; };
  counter();
  CHECK(counter() == 2);
}

TEST_CASE("assigning a callback from inside its own callable is safe") {
  auto token = std::make_shared<int>(3);
  Callback<int()> inner = [token] { return *token; };
  Callback<int()> outer = [inner]() { return inner(); };
  // outer's callable holds a copy of inner; replace outer by a callback moved out of itself.
  Callback<int()> taken = std::move(outer);
  outer = std::move(taken);
  CHECK(outer() == 3);
  outer = nullptr;
  CHECK(outer == nullptr);
  CHECK(token.use_count() == 2);  // inner's copy only
}

TEST_CASE("a std::function converts to a callback and back") {
  std::function<int(int)> twice = [](int x) { return 2 * x; };
  Callback<int(int)> callback = twice;
  CHECK(callback(4) == 8);
  std::function<int(int)> again = callback;
  CHECK(again(5) == 10);
}

}  // namespace
}  // namespace dst
