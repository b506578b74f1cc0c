// IoBuffer: the memory of a request's payload (a read's destination, a
// write's source), taken from a pool of free buffers.
//
// A fresh zero-filled vector per request costs a memset of the whole payload
// and, for large payloads, a page fault per 4 KiB page; pooled buffers are
// reused as they are. They are never initialised: a read's buffer is filled
// completely before it is sent (a member answer that does not cover all of
// it fails the read), a write's payload is received into it.
//
// Buffers come in power-of-two size classes from 4 KiB to 32 MiB. Free
// buffers are kept up to kMaxIdleBytes in all, so that memory at rest stays
// bounded; beyond that they go back to the allocator.
//
// Threading: one pool per thread; a buffer goes back to the pool of the
// thread that frees it (the event loop's, in the server).
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>

namespace dst::server {

class IoBuffer {
 public:
  // Idle buffers kept per thread, in bytes.
  static constexpr size_t kMaxIdleBytes = size_t{16} << 20;

  IoBuffer() = default;
  // `size` bytes, uninitialised; at most 32 MiB.
  explicit IoBuffer(size_t size);
  IoBuffer(IoBuffer&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)),
        size_(std::exchange(other.size_, 0)),
        size_class_(other.size_class_) {}
  IoBuffer& operator=(IoBuffer&& other) noexcept {
    if (this != &other) {
      Release();
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
      size_class_ = other.size_class_;
    }
    return *this;
  }
  IoBuffer(const IoBuffer&) = delete;
  IoBuffer& operator=(const IoBuffer&) = delete;
  ~IoBuffer() { Release(); }

  uint8_t* data() { return data_; }
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }

 private:
  void Release();

  uint8_t* data_ = nullptr;
  size_t size_ = 0;
  uint8_t size_class_ = 0;
};

// Gives the memory that the allocator keeps after frees back to the system
// (glibc's malloc_trim): the buffers and replies of a client that held many
// megabytes, once it has gone. Costs a walk over the heap's free memory, so
// it is for the end of large users, not for every free.
void ReturnFreedMemory();

}  // namespace dst::server
