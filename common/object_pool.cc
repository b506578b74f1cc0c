#include "common/object_pool.h"

#include <array>
#include <mutex>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#define DST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define DST_ASAN 1
#endif
#endif

#if defined(DST_ASAN)
#include <sanitizer/asan_interface.h>
// An idle block is poisoned: a use after free still fails under AddressSanitizer until the block
// is taken again.
#define DST_POISON(block, bytes) ASAN_POISON_MEMORY_REGION(block, bytes)
#define DST_UNPOISON(block, bytes) ASAN_UNPOISON_MEMORY_REGION(block, bytes)
#else
#define DST_POISON(block, bytes) ((void)(block), (void)(bytes))
#define DST_UNPOISON(block, bytes) ((void)(block), (void)(bytes))
#endif

namespace dst::pool {

namespace {

constexpr size_t kClasses = kMaxPooledBytes / kGranule;

size_t ClassOf(size_t bytes) {
  return bytes == 0 ? 0 : (bytes - 1) / kGranule;
}

size_t ClassBytes(size_t size_class) {
  return (size_class + 1) * kGranule;
}

struct Batch {
  std::array<void*, kBatch> blocks;
};

void FreeBlock(void* block, size_t size_class) {
  DST_UNPOISON(block, ClassBytes(size_class));
  ::operator delete(block);
}

// Where one thread's surplus of a class meets another thread's need, a batch at a time: blocks
// taken on one loop and freed on another (a handler posted across) come back without the
// allocator, and the lock is taken once per kBatch blocks.
class Depot {
 public:
  ~Depot() {
    for (size_t c = 0; c < kClasses; ++c)
      for (const Batch& batch : batches_[c])
        for (void* block : batch.blocks)
          FreeBlock(block, c);
  }

  bool Take(size_t size_class, Batch* batch) {
    const std::lock_guard lock(mutex_);
    std::vector<Batch>& list = batches_[size_class];
    if (list.empty()) return false;
    *batch = list.back();
    list.pop_back();
    idle_bytes_ -= kBatch * ClassBytes(size_class);
    return true;
  }

  void Give(size_t size_class, const Batch& batch) {
    {
      const std::lock_guard lock(mutex_);
      const size_t bytes = kBatch * ClassBytes(size_class);
      if (idle_bytes_ + bytes <= kMaxDepotBytes) {
        batches_[size_class].push_back(batch);
        idle_bytes_ += bytes;
        return;
      }
    }
    for (void* block : batch.blocks)
      FreeBlock(block, size_class);
  }

  size_t idle_bytes() {
    const std::lock_guard lock(mutex_);
    return idle_bytes_;
  }

 private:
  std::mutex mutex_;
  std::array<std::vector<Batch>, kClasses> batches_;
  size_t idle_bytes_ = 0;
};

Depot& TheDepot() {
  static Depot depot;  // outlives every thread's pool but the main thread's (destroyed first)
  return depot;
}

class ThreadPool {
 public:
  enum class State : unsigned char { kNotYet, kAlive, kGone };

  ThreadPool() {
    TheDepot();  // made before this pool, so destroyed after it
    for (auto& list : free_)
      list.reserve(kMaxPerClass);
    state = State::kAlive;
  }
  ~ThreadPool() {
    state = State::kGone;
    for (size_t c = 0; c < kClasses; ++c) {
      // What this thread kept goes to the depot, for the threads that go on.
      while (free_[c].size() >= kBatch)
        TheDepot().Give(c, TakeBatch(c));
      for (void* block : free_[c])
        FreeBlock(block, c);
    }
  }

  void* Take(size_t size_class) {
    std::vector<void*>& list = free_[size_class];
    if (list.empty()) {
      Batch batch;
      if (!TheDepot().Take(size_class, &batch)) return ::operator new(ClassBytes(size_class));
      list.assign(batch.blocks.begin(), batch.blocks.end());
    }
    void* block = list.back();
    list.pop_back();
    DST_UNPOISON(block, ClassBytes(size_class));
    return block;
  }

  void Give(void* block, size_t size_class) {
    if (free_[size_class].size() == kMaxPerClass)
      TheDepot().Give(size_class, TakeBatch(size_class));
    free_[size_class].push_back(block);  // within the reserved capacity
    DST_POISON(block, ClassBytes(size_class));
  }

  size_t idle_bytes() const {
    size_t bytes = 0;
    for (size_t c = 0; c < kClasses; ++c)
      bytes += free_[c].size() * ClassBytes(c);
    return bytes;
  }

  // Whether this thread's pool is still to be made, made, or destroyed (thread exit).
  static thread_local State state;

 private:
  // The last kBatch free blocks of a class, taken out of this thread's list.
  Batch TakeBatch(size_t size_class) {
    std::vector<void*>& list = free_[size_class];
    Batch batch;
    std::copy(list.end() - kBatch, list.end(), batch.blocks.begin());
    list.resize(list.size() - kBatch);
    return batch;
  }

  std::array<std::vector<void*>, kClasses> free_;
};

thread_local ThreadPool::State ThreadPool::state = ThreadPool::State::kNotYet;

ThreadPool& ThisThread() {
  thread_local ThreadPool pool;
  return pool;
}

bool Pooled(size_t bytes) {
  return bytes <= kMaxPooledBytes && ThreadPool::state != ThreadPool::State::kGone;
}

}  // namespace

void* Allocate(size_t bytes) {
  if (!Pooled(bytes)) return ::operator new(bytes);
  return ThisThread().Take(ClassOf(bytes));
}

void Deallocate(void* block, size_t bytes) noexcept {
  if (block == nullptr) return;
  // A block of a class is as large as its class whichever pool took it: any pool can keep it.
  if (!Pooled(bytes)) {
    ::operator delete(block);
    return;
  }
  ThisThread().Give(block, ClassOf(bytes));
}

size_t IdleBytes() {
  return ThisThread().idle_bytes();
}

size_t DepotBytes() {
  return TheDepot().idle_bytes();
}

}  // namespace dst::pool
