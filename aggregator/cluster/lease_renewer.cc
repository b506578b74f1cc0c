#include "aggregator/cluster/lease_renewer.h"

#include "common/log.h"

namespace dst::cluster {

Status LeaseRenewer::Start(EtcdClientOptions options, int64_t lease, std::chrono::seconds ttl) {
  const auto interval =
      std::max<std::chrono::milliseconds>(ttl / 3, std::chrono::milliseconds(100));
  options.timeout = interval;
  DST_RETURN_IF_ERROR(EtcdClient::Create(std::move(options), &etcd_));
  lease_ = lease;
  asio::co_spawn(io_, Renew(interval), asio::detached);
  thread_ = std::thread([this] { io_.run(); });
  return Status::Ok();
}

void LeaseRenewer::Stop() {
  if (!thread_.joinable()) return;
  asio::post(io_, [this] {
    stopping_ = true;
    tick_.cancel();
    io_.stop();
  });
  thread_.join();
}

asio::awaitable<void> LeaseRenewer::Renew(std::chrono::milliseconds interval) {
  bool failing = false;
  while (!stopping_) {
    tick_.expires_after(interval);
    asio::error_code ec;
    co_await tick_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    if (ec || stopping_) co_return;
    int64_t ttl = 0;
    const Status s = co_await etcd_->KeepAliveOnce(lease_, &ttl);
    if (stopping_) co_return;
    if (s.ok()) {
      failing = false;
    } else if (!failing) {
      failing = true;
      LOG_WARNING("cluster: lease %lld not renewed: %s", static_cast<long long>(lease_),
                  s.message().c_str());
    }
  }
}

}  // namespace dst::cluster
