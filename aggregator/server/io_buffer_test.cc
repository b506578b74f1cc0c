#include "aggregator/server/io_buffer.h"

#include <doctest/doctest.h>

#include <cstring>
#include <utility>

namespace dst::server::io_buffer_test {
namespace {

TEST_CASE("an IoBuffer has the size asked for, and room for it") {
  for (size_t size : {size_t{1}, size_t{4096}, size_t{4097}, size_t{1} << 20, size_t{32} << 20}) {
    IoBuffer buffer(size);
    REQUIRE(buffer.data() != nullptr);
    CHECK(buffer.size() == size);
    std::memset(buffer.data(), 0xab, size);  // all of it is writable (ASan checks)
  }
}

TEST_CASE("an empty IoBuffer holds nothing") {
  IoBuffer buffer(0);
  CHECK(buffer.empty());
  CHECK(buffer.data() == nullptr);
}

TEST_CASE("a freed buffer is reused for the next one of its size class") {
  uint8_t* first = nullptr;
  {
    IoBuffer buffer(4096);
    first = buffer.data();
  }
  IoBuffer again(3000);  // the same 4 KiB class
  CHECK(again.data() == first);
}

TEST_CASE("moving an IoBuffer moves the memory") {
  IoBuffer a(8192);
  uint8_t* data = a.data();
  IoBuffer b(std::move(a));
  CHECK(b.data() == data);
  CHECK(b.size() == 8192);
  CHECK(a.empty());
  IoBuffer c;
  c = std::move(b);
  CHECK(c.data() == data);
  CHECK(b.empty());
}

TEST_CASE("buffers larger than the largest class are not pooled") {
  IoBuffer big((size_t{32} << 20) + 1);
  REQUIRE(big.data() != nullptr);
  big.data()[big.size() - 1] = 1;
}

}  // namespace
}  // namespace dst::server::io_buffer_test
