// The small objects of the request path (a request's state in each layer: the client request,
// the volume's fan-out and its member I/Os, a member's send, the handlers posted between event
// loops) are taken from a per-thread pool of free blocks instead of the allocator: at a steady
// load a request allocates nothing for them.
//
// Blocks come in size classes of kGranule bytes up to kMaxPooledBytes; larger or over-aligned
// objects go to operator new as usual. A freed block goes back to the pool of the thread that
// frees it, which may not be the one that took it (a handler posted to another loop, a request
// freed on the loop that answered it). Each thread keeps at most kMaxPerClass free blocks of a
// class; beyond that it hands kBatch of them to a shared depot, where a thread whose list of
// that class is empty takes them back a batch at a time. The depot keeps at most kMaxDepotBytes;
// beyond that blocks go back to the allocator, so that memory at rest stays bounded.
//
//   auto request = MakePooled<Request>(...);         // shared_ptr, object and count in one block
//   asio::post(loop, asio::bind_allocator(PoolAllocator<void>(), handler));
//
// Threading: any thread. A thread's own pool takes no lock; the depot takes a mutex once per
// batch. A block freed while its thread is exiting, after that thread's pool is gone, goes straight
// back to the allocator.
#pragma once

#include <cstddef>
#include <memory>
#include <new>
#include <utility>

namespace dst {

namespace pool {

inline constexpr size_t kGranule = 32;
inline constexpr size_t kMaxPooledBytes = 1024;
inline constexpr size_t kBatch = 32;
inline constexpr size_t kMaxPerClass = 2 * kBatch;
inline constexpr size_t kMaxDepotBytes = size_t{4} << 20;

// `bytes` of memory aligned for any standard type; never null (throws bad_alloc like new).
void* Allocate(size_t bytes);
// Gives back a block from Allocate(bytes), with the same `bytes`.
void Deallocate(void* block, size_t bytes) noexcept;

// This thread's free blocks, and the depot's, in bytes (for tests).
size_t IdleBytes();
size_t DepotBytes();

}  // namespace pool

// A standard allocator over the pool, for std::allocate_shared and asio's associated allocator.
template <typename T>
class PoolAllocator {
 public:
  using value_type = T;

  PoolAllocator() noexcept = default;
  template <typename U>
  PoolAllocator(const PoolAllocator<U>&) noexcept {}

  T* allocate(size_t n) {
    if constexpr (alignof(T) > __STDCPP_DEFAULT_NEW_ALIGNMENT__) {
      return static_cast<T*>(::operator new (n * sizeof(T), std::align_val_t{alignof(T)}));
    } else {
      return static_cast<T*>(pool::Allocate(n * sizeof(T)));
    }
  }
  void deallocate(T* p, size_t n) noexcept {
    if constexpr (alignof(T) > __STDCPP_DEFAULT_NEW_ALIGNMENT__) {
      ::operator delete (p, std::align_val_t{alignof(T)});
    } else {
      pool::Deallocate(p, n * sizeof(T));
    }
  }

  template <typename U>
  bool operator==(const PoolAllocator<U>&) const noexcept {
    return true;
  }
};

// std::make_shared from the pool: the object and its reference counts in one pooled block.
template <typename T, typename... Args>
std::shared_ptr<T> MakePooled(Args&&... args) {
  return std::allocate_shared<T>(PoolAllocator<T>(), std::forward<Args>(args)...);
}

}  // namespace dst
