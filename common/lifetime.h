// Lifetime: the one idiom for "the object that posted this handler may be
// gone by the time it runs". An owner holds a Lifetime member; each handler
// that captures `this` also captures lifetime_.Watch() and checks it first:
//
//   timer_.async_wait([this, alive = lifetime_.Watch()](const asio::error_code& ec) {
//     if (ec || alive.expired()) return;
//     ...
//   });
//
// The watch expires when the Lifetime is destroyed (with its owner) or
// ended early with End() (an owner that stops before it is destroyed).
// Watches are cheap to copy: one weak reference.
//
// Threading: a Lifetime and its watches belong to one thread (the owner's
// event loop); expired() is not a synchronisation point.
#pragma once

#include <memory>

namespace dst {

class LifetimeWatch {
 public:
  LifetimeWatch() = default;
  bool expired() const { return token_.expired(); }

 private:
  friend class Lifetime;
  explicit LifetimeWatch(std::weak_ptr<const char> token) : token_(std::move(token)) {}
  std::weak_ptr<const char> token_;
};

class Lifetime {
 public:
  Lifetime() = default;
  Lifetime(const Lifetime&) = delete;
  Lifetime& operator=(const Lifetime&) = delete;

  LifetimeWatch Watch() const { return LifetimeWatch(token_); }
  // Expires every watch now; later watches are born expired.
  void End() { token_.reset(); }
  bool ended() const { return token_ == nullptr; }

 private:
  std::shared_ptr<const char> token_ = std::make_shared<const char>(0);
};

}  // namespace dst
