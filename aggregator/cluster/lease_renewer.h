// LeaseRenewer: keeps an etcd lease alive from a thread of its own while the caller blocks on
// something long (create --cluster formatting the members, serve assembling and serving its
// volumes): a renewal every TTL/3, each bounded by the client's request timeout. A renewal that
// fails is logged once ("cluster: lease L not renewed: ...") and one that succeeds after that
// says so.
//
// Without a LeaseWatch the lease then simply expires in etcd as it would for a caller that
// died, and the caller finds out when it next writes under a condition on what the lease stood
// for. With one, the renewer also tells when the lease is lost: etcd answers that it expired or
// was revoked, or a TTL passes after the last renewal that succeeded was sent; it then stops
// renewing.
//
// Threading: Start and Stop from one thread; the renewals, and LeaseWatch::lost, run on the
// renewer's own.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include <asio.hpp>

#include "aggregator/cluster/etcd_client.h"
#include "common/status.h"

namespace dst::cluster {

struct LeaseWatch {
  // Called once, on the renewer's thread, with why the lease is lost.
  std::function<void(const std::string& why)> lost;
  // When the last renewal that succeeded was sent (or the lease granted): the lease is lost
  // unless renewed by then + TTL.
  std::chrono::steady_clock::time_point renewed;
  // Appended to the warning of a failed renewal: what the caller does if it stays so.
  std::string failing_note;
};

class LeaseRenewer {
 public:
  LeaseRenewer() = default;
  ~LeaseRenewer() { Stop(); }
  LeaseRenewer(const LeaseRenewer&) = delete;
  LeaseRenewer& operator=(const LeaseRenewer&) = delete;

  // How often a lease of `ttl` is renewed: TTL/3, at least every 100 ms.
  static std::chrono::milliseconds Interval(std::chrono::seconds ttl);

  // `options`: for a client of its own (the caller's runs on the caller's thread). `watch`: see
  // the top; without `watch.lost` the lease is only renewed.
  Status Start(EtcdClientOptions options, int64_t lease, std::chrono::seconds ttl,
               LeaseWatch watch = {});
  // Returns once the thread has ended; a renewal in flight is abandoned. Safe to call again.
  void Stop();

 private:
  asio::awaitable<void> Renew();
  void ArmExpiry(std::chrono::steady_clock::time_point at);
  void Lose(const std::string& why);

  asio::io_context io_{1};
  std::unique_ptr<EtcdClient> etcd_;
  asio::steady_timer tick_{io_};
  asio::steady_timer expiry_{io_};
  std::thread thread_;
  int64_t lease_ = 0;
  std::chrono::seconds ttl_{0};
  LeaseWatch watch_;
  // The renewer's thread only.
  bool stopping_ = false;
  bool lost_ = false;
};

}  // namespace dst::cluster
