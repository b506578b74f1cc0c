// Callback<R(Args...)>: std::function with room for the captures of the request path.
//
// libstdc++'s std::function keeps a callable in place only when it is trivially copyable and at
// most 16 bytes, so a completion that captures two shared_ptrs (a connection and its request) or
// one shared_ptr and an executor costs a heap allocation per request. A Callback keeps in place
// any callable of up to kInlineBytes that moves without throwing; a larger one goes to the
// object pool (object_pool.h). Otherwise it is used as std::function is: copyable, empty or not,
// called as `done(err)`, assigned nullptr, and built from any callable of the signature (a
// std::function included).
//
// Threading: as std::function; a Callback is one object, used by one thread at a time.
#pragma once

#include <cstddef>
#include <functional>
#include <new>
#include <type_traits>
#include <utility>

#include "common/object_pool.h"

namespace dst {

template <typename Signature>
class Callback;

template <typename R, typename... Args>
class Callback<R(Args...)> {
 public:
  static constexpr size_t kInlineBytes = 48;

  Callback() noexcept = default;
  Callback(std::nullptr_t) noexcept {}

  template <typename F, typename Decayed = std::decay_t<F>,
            typename = std::enable_if_t<!std::is_same_v<Decayed, Callback> &&
                                        std::is_invocable_r_v<R, Decayed&, Args...>>>
  Callback(F&& f) {
    if constexpr (std::is_pointer_v<Decayed> || std::is_member_pointer_v<Decayed> ||
                  IsStdFunction<Decayed>::value) {
      if (!f) return;  // an empty function or a null pointer makes an empty Callback
    }
    if constexpr (kInPlace<Decayed>) {
      ::new (static_cast<void*>(storage_)) Decayed(std::forward<F>(f));
      ops_ = &kInPlaceOps<Decayed>;
    } else {
      *reinterpret_cast<Decayed**>(storage_) = NewPooled<Decayed>(std::forward<F>(f));
      ops_ = &kPooledOps<Decayed>;
    }
  }

  Callback(const Callback& other) : ops_(other.ops_) {
    if (ops_) ops_->copy(other.storage_, storage_);
  }
  Callback(Callback&& other) noexcept : ops_(std::exchange(other.ops_, nullptr)) {
    if (ops_) ops_->move(other.storage_, storage_);
  }
  Callback& operator=(const Callback& other) {
    if (this != &other) *this = Callback(other);
    return *this;
  }
  // `other` may live inside this callback's callable: it is taken out first.
  Callback& operator=(Callback&& other) noexcept {
    if (this != &other) {
      Callback taken(std::move(other));
      Reset();
      ops_ = std::exchange(taken.ops_, nullptr);
      if (ops_) ops_->move(taken.storage_, storage_);
    }
    return *this;
  }
  Callback& operator=(std::nullptr_t) noexcept {
    Reset();
    return *this;
  }
  ~Callback() { Reset(); }

  explicit operator bool() const noexcept { return ops_ != nullptr; }
  friend bool operator==(const Callback& c, std::nullptr_t) noexcept { return !c; }

  // Throws std::bad_function_call when empty, as std::function does.
  R operator()(Args... args) const {
    if (!ops_) throw std::bad_function_call();
    return ops_->invoke(storage_, std::forward<Args>(args)...);
  }

 private:
  template <typename T>
  struct IsStdFunction : std::false_type {};
  template <typename S>
  struct IsStdFunction<std::function<S>> : std::true_type {};

  // A callable too large to keep in place, built in a pooled block.
  template <typename F, typename... From>
  static F* NewPooled(From&&... from) {
    void* block = pool::Allocate(sizeof(F));
    try {
      return ::new (block) F(std::forward<From>(from)...);
    } catch (...) {
      pool::Deallocate(block, sizeof(F));
      throw;
    }
  }

  struct Ops {
    R (*invoke)(void* storage, Args&&... args);
    void (*copy)(const void* from, void* to);
    void (*move)(void* from, void* to) noexcept;  // and destroys `from`'s callable
    void (*destroy)(void* storage) noexcept;
  };

  template <typename F>
  static constexpr bool kInPlace =
      sizeof(F) <= kInlineBytes &&
      alignof(F) <= alignof(std::max_align_t) && std::is_nothrow_move_constructible_v<F>;

  template <typename F>
  static constexpr Ops kInPlaceOps{
      [](void* s, Args&&... args) -> R {
        return std::invoke(*static_cast<F*>(s), std::forward<Args>(args)...);
      },
      [](const void* from, void* to) { ::new (to) F(*static_cast<const F*>(from)); },
      [](void* from, void* to) noexcept {
        ::new (to) F(std::move(*static_cast<F*>(from)));
        static_cast<F*>(from)->~F();
      },
      [](void* s) noexcept { static_cast<F*>(s)->~F(); },
  };

  template <typename F>
  static constexpr Ops kPooledOps{
      [](void* s, Args&&... args) -> R {
        return std::invoke(**static_cast<F**>(s), std::forward<Args>(args)...);
      },
      [](const void* from, void* to) {
        *static_cast<F**>(to) = NewPooled<F>(**static_cast<F* const*>(from));
      },
      [](void* from, void* to) noexcept { *static_cast<F**>(to) = *static_cast<F**>(from); },
      [](void* s) noexcept {
        F* f = *static_cast<F**>(s);
        f->~F();
        pool::Deallocate(f, sizeof(F));
      },
  };

  void Reset() noexcept {
    if (ops_) std::exchange(ops_, nullptr)->destroy(storage_);
  }

  const Ops* ops_ = nullptr;
  alignas(std::max_align_t) mutable unsigned char storage_[kInlineBytes];
};

}  // namespace dst
