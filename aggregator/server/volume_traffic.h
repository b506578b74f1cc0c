// VolumeTraffic: what clients have done with one volume since start, for
// `dst-aggregator status` and the metrics endpoint. Plain counters, updated
// by the client connections of that volume, and the connections themselves
// (VolumeClient), for `volume remove` to name and end them.
//
// Threading: the event-loop thread only.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <list>
#include <string>

namespace dst::server {

// A client connection of a volume, from the end of its handshake until it closes.
class VolumeClient {
 public:
  virtual const std::string& peer() const = 0;
  // Ends the connection on the server's side: requests that arrive from now on are answered
  // ESHUTDOWN; once none it started on the volume is in flight, it reads no more, sends the
  // replies it holds and closes. `ended` runs then, once; from that point the connection no
  // longer touches the volume.
  virtual void EndService(std::function<void()> ended) = 0;

 protected:
  ~VolumeClient() = default;
};

struct VolumeTraffic {
  std::list<VolumeClient*> connected;  // in the order they connected; size() == clients

  uint64_t clients = 0;      // connected now
  uint64_t connections = 0;  // since start
  uint64_t in_flight = 0;    // requests received and not yet answered
  uint64_t requests = 0;     // answered
  uint64_t errors = 0;       // answered with an error
  uint64_t reads = 0;
  uint64_t writes = 0;
  uint64_t read_bytes = 0;
  uint64_t write_bytes = 0;
  uint64_t latency_total_us = 0;  // receipt to answer, over `requests`
  uint64_t latency_max_us = 0;

  void RecordLatency(std::chrono::steady_clock::duration latency) {
    const auto us = static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::microseconds>(latency).count());
    latency_total_us += us;
    if (us > latency_max_us) latency_max_us = us;
  }
  uint64_t latency_avg_us() const { return requests ? latency_total_us / requests : 0; }
};

}  // namespace dst::server
