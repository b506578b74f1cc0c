#include "aggregator/cluster/lease_renewer.h"

#include <algorithm>

#include "common/log.h"

namespace dst::cluster {

std::chrono::milliseconds LeaseRenewer::Interval(std::chrono::seconds ttl) {
  return std::max<std::chrono::milliseconds>(ttl / 3, std::chrono::milliseconds(100));
}

Status LeaseRenewer::Start(EtcdClientOptions options, int64_t lease, std::chrono::seconds ttl,
                           LeaseWatch watch) {
  DST_RETURN_IF_ERROR(EtcdClient::Create(std::move(options), &etcd_));
  lease_ = lease;
  ttl_ = ttl;
  watch_ = std::move(watch);
  if (watch_.lost) ArmExpiry(watch_.renewed + ttl_);
  asio::co_spawn(io_, Renew(), asio::detached);
  thread_ = std::thread([this] { io_.run(); });
  return Status::Ok();
}

void LeaseRenewer::Stop() {
  if (!thread_.joinable()) return;
  asio::post(io_, [this] {
    stopping_ = true;
    expiry_.cancel();
    tick_.cancel();
    io_.stop();
  });
  thread_.join();
}

void LeaseRenewer::ArmExpiry(std::chrono::steady_clock::time_point at) {
  expiry_.expires_at(at);
  expiry_.async_wait([this](const asio::error_code& ec) {
    if (ec || stopping_) return;
    Lose("not renewed for " + std::to_string(ttl_.count()) + " s");
  });
}

asio::awaitable<void> LeaseRenewer::Renew() {
  bool failing = false;
  while (!stopping_ && !lost_) {
    tick_.expires_after(Interval(ttl_));
    asio::error_code ec;
    co_await tick_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    if (ec || stopping_ || lost_) co_return;
    const auto sent = std::chrono::steady_clock::now();
    int64_t ttl = 0;
    const Status s = co_await etcd_->KeepAliveOnce(lease_, &ttl);
    if (stopping_ || lost_) co_return;
    if (s.ok()) {
      if (failing) LOG_INFO("cluster: lease %lld renewed again", static_cast<long long>(lease_));
      failing = false;
      if (watch_.lost) ArmExpiry(sent + std::chrono::seconds(ttl));
    } else if (s.err() == ENOENT && watch_.lost) {
      Lose("etcd: expired or revoked");
    } else if (!failing) {
      failing = true;
      LOG_WARNING("cluster: lease %lld not renewed: %s%s", static_cast<long long>(lease_),
                  s.message().c_str(), watch_.failing_note.c_str());
    }
  }
}

void LeaseRenewer::Lose(const std::string& why) {
  if (lost_) return;
  lost_ = true;
  expiry_.cancel();
  tick_.cancel();
  watch_.lost(why);
}

}  // namespace dst::cluster
