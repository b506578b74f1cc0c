#include "aggregator/member/member_env.h"

#include <cstdint>
#include <utility>

#include "aggregator/member/nbd_connection.h"
#include "common/lifetime.h"

namespace dst::member {
namespace {

// An asio::steady_timer that keeps the MemberTimer promise: a wait whose
// expiry was already queued when the timer was restarted, cancelled or
// destroyed finds its arm number stale, or its watch expired, and does nothing.
class AsioTimer final : public MemberTimer {
 public:
  explicit AsioTimer(asio::io_context& io) : timer_(io) {}

  void Start(std::chrono::milliseconds delay, std::function<void()> fire) override {
    const uint64_t arm = ++arms_;
    timer_.expires_after(delay);
    timer_.async_wait(
        [this, alive = lifetime_.Watch(), arm, fire = std::move(fire)](const asio::error_code& ec) {
          if (ec || alive.expired() || arm != arms_) return;
          fire();
        });
  }

  void Cancel() override {
    ++arms_;
    timer_.cancel();
  }

 private:
  asio::steady_timer timer_;
  uint64_t arms_ = 0;
  Lifetime lifetime_;
};

}  // namespace

std::unique_ptr<MemberTimer> DefaultMemberEnv::NewTimer() {
  return std::make_unique<AsioTimer>(io_);
}

std::unique_ptr<MemberConnection> DefaultMemberEnv::NewConnection(const std::string& uri,
                                                                  ConnectPlan plan) {
  return std::make_unique<NbdConnection>(io_, uri, std::move(plan));
}

}  // namespace dst::member
