// LeaseRenewer: keeps an etcd lease alive from a thread of its own while the caller blocks on
// something long (create --cluster formatting the members): a renewal every TTL/3, each bounded
// by TTL/3. A renewal that fails is logged once ("cluster: lease L not renewed: ..."); the
// lease then expires in etcd as it would for a caller that died, and the caller finds out when
// it next writes under a condition on what the lease stood for.
//
// Threading: Start and Stop from one thread; the renewals run on the renewer's own.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <thread>

#include <asio.hpp>

#include "aggregator/cluster/etcd_client.h"
#include "common/status.h"

namespace dst::cluster {

class LeaseRenewer {
 public:
  LeaseRenewer() = default;
  ~LeaseRenewer() { Stop(); }
  LeaseRenewer(const LeaseRenewer&) = delete;
  LeaseRenewer& operator=(const LeaseRenewer&) = delete;

  // `options`: for a client of its own (the caller's runs on the caller's thread).
  Status Start(EtcdClientOptions options, int64_t lease, std::chrono::seconds ttl);
  // Returns once the thread has ended; a renewal in flight is abandoned. Safe to call again.
  void Stop();

 private:
  asio::awaitable<void> Renew(std::chrono::milliseconds interval);

  asio::io_context io_{1};
  std::unique_ptr<EtcdClient> etcd_;
  asio::steady_timer tick_{io_};
  std::thread thread_;
  int64_t lease_ = 0;
  bool stopping_ = false;  // the renewer's thread only
};

}  // namespace dst::cluster
