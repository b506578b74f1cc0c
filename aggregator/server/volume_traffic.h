// VolumeTraffic: what clients have done with one volume since start, for
// `dst-aggregator status` and the metrics endpoint: counters updated by the
// client connections of that volume, and the connections themselves
// (VolumeClient), for `volume remove` to name and end them.
//
// Threading: see VolumeTraffic and VolumeClient.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <string>

namespace dst::server {

// A client connection of a volume, from the end of its handshake until it closes.
class VolumeClient {
 public:
  virtual const std::string& peer() const = 0;
  // The event loop the connection runs on (0: the home loop; event_loops.h).
  virtual size_t loop() const = 0;
  // Ends the connection on the server's side: requests that arrive from now on are answered
  // ESHUTDOWN; once none it started on the volume is in flight, it reads no more, sends the
  // replies it holds and closes. `ended` runs then, once, on the home loop; from that point the
  // connection no longer touches the volume. Called on the home loop.
  virtual void EndService(std::function<void()> ended) = 0;

 protected:
  ~VolumeClient() = default;
};

// What clients have done with a volume, as read at one moment.
struct TrafficCounts {
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

  uint64_t latency_avg_us() const { return requests ? latency_total_us / requests : 0; }
};

// The live counters. `connected`, `clients` and `connections` change on the home loop only (a
// connection on another loop posts its arrival and departure there); the request counters are
// updated by connections on every loop, so they are atomic, and each is exact (a reader may see
// a request counted in `requests` and not yet in `reads`, never a torn or lost count).
struct VolumeTraffic {
  using Counter = std::atomic<uint64_t>;

  std::list<VolumeClient*> connected;  // in the order they connected; size() == clients

  uint64_t clients = 0;      // connected now
  uint64_t connections = 0;  // since start
  Counter in_flight{0};
  Counter requests{0};
  Counter errors{0};
  Counter reads{0};
  Counter writes{0};
  Counter read_bytes{0};
  Counter write_bytes{0};
  Counter latency_total_us{0};
  Counter latency_max_us{0};

  void Add(Counter& counter, uint64_t n) { counter.fetch_add(n, std::memory_order_relaxed); }
  void RecordLatency(std::chrono::steady_clock::duration latency) {
    const auto us = static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::microseconds>(latency).count());
    Add(latency_total_us, us);
    uint64_t max = latency_max_us.load(std::memory_order_relaxed);
    while (us > max && !latency_max_us.compare_exchange_weak(max, us, std::memory_order_relaxed)) {
    }
  }
  // On the home loop.
  TrafficCounts Counts() const {
    const auto get = [](const Counter& c) { return c.load(std::memory_order_relaxed); };
    return {clients,
            connections,
            get(in_flight),
            get(requests),
            get(errors),
            get(reads),
            get(writes),
            get(read_bytes),
            get(write_bytes),
            get(latency_total_us),
            get(latency_max_us)};
  }
};

}  // namespace dst::server
