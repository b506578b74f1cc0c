#include "aggregator/server/io_buffer.h"

#include <malloc.h>

#include <bit>
#include <vector>

namespace dst::server {

namespace {

constexpr int kMinShift = 12;  // 4 KiB
constexpr int kMaxShift = 25;  // 32 MiB, the largest payload a client may send
constexpr int kClasses = kMaxShift - kMinShift + 1;
constexpr uint8_t kUnpooled = 0xff;  // larger than any class: allocated and freed as it is

size_t ClassBytes(int size_class) {
  return size_t{1} << (kMinShift + size_class);
}

int ClassOf(size_t size) {
  if (size <= ClassBytes(0)) return 0;
  return std::bit_width(size - 1) - kMinShift;
}

class Pool {
 public:
  ~Pool() {
    for (auto& list : free_)
      for (uint8_t* block : list)
        delete[] block;
  }

  uint8_t* Take(int size_class) {
    std::vector<uint8_t*>& list = free_[size_class];
    if (list.empty()) return new uint8_t[ClassBytes(size_class)];  // uninitialised
    uint8_t* block = list.back();
    list.pop_back();
    idle_bytes_ -= ClassBytes(size_class);
    return block;
  }

  void Give(uint8_t* block, int size_class) {
    if (idle_bytes_ + ClassBytes(size_class) > IoBuffer::kMaxIdleBytes) {
      delete[] block;
      return;
    }
    free_[size_class].push_back(block);
    idle_bytes_ += ClassBytes(size_class);
  }

 private:
  std::vector<uint8_t*> free_[kClasses];
  size_t idle_bytes_ = 0;
};

Pool& ThreadPool() {
  thread_local Pool pool;
  return pool;
}

}  // namespace

IoBuffer::IoBuffer(size_t size) : size_(size) {
  if (size == 0) return;
  const int size_class = ClassOf(size);
  if (size_class >= kClasses) {
    size_class_ = kUnpooled;
    data_ = new uint8_t[size];
    return;
  }
  size_class_ = static_cast<uint8_t>(size_class);
  data_ = ThreadPool().Take(size_class);
}

void ReturnFreedMemory() {
  ::malloc_trim(0);
}

void IoBuffer::Release() {
  if (data_ == nullptr) return;
  if (size_class_ == kUnpooled)
    delete[] data_;
  else
    ThreadPool().Give(data_, size_class_);
  data_ = nullptr;
  size_ = 0;
}

}  // namespace dst::server
