// VolumeTraffic: what clients have done with one volume since start, for
// `dst-aggregator status` and the metrics endpoint: counters updated by the
// client connections of that volume, and the connections themselves
// (VolumeClient), for `volume remove` to name and end them.
//
// Threading: see VolumeTraffic and VolumeClient.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <string>
#include <vector>

#include "common/counter.h"

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

// What the connections on one event loop have done with a volume: written on that loop alone, so
// each counter is a SingleWriterCounter (no locked instruction on the request path), on a cache
// line of its own, which no other loop writes.
struct alignas(64) LoopTraffic {
  using Counter = SingleWriterCounter;

  Counter in_flight;
  Counter requests;
  Counter errors;
  Counter reads;
  Counter writes;
  Counter read_bytes;
  Counter write_bytes;
  Counter latency_total_us;
  Counter latency_max_us;

  void RecordLatency(std::chrono::steady_clock::duration latency) {
    RecordLatencyUs(latency_total_us, latency_max_us, latency);
  }
};

// The live counters. `connected`, `clients` and `connections` change on the home loop only (a
// connection on another loop posts its arrival and departure there). The request counters are
// kept per event loop (`on_loop`, one LoopTraffic each) and summed when read: each sum is exact,
// though a reader may see a request counted in `requests` and not yet in `reads`.
struct VolumeTraffic {
  explicit VolumeTraffic(size_t loops = 1) : on_loop(loops) {}

  std::list<VolumeClient*> connected;  // in the order they connected; size() == clients

  uint64_t clients = 0;              // connected now
  uint64_t connections = 0;          // since start
  std::vector<LoopTraffic> on_loop;  // indexed by event loop (event_loops.h)

  // The counters a connection on event loop `loop` writes; a loop the registry was not made for
  // is a caller bug, thrown.
  LoopTraffic& OnLoop(size_t loop) { return on_loop.at(loop); }

  // On the home loop.
  TrafficCounts Counts() const {
    TrafficCounts counts{.clients = clients, .connections = connections};
    for (const LoopTraffic& t : on_loop) {
      counts.in_flight += t.in_flight;
      counts.requests += t.requests;
      counts.errors += t.errors;
      counts.reads += t.reads;
      counts.writes += t.writes;
      counts.read_bytes += t.read_bytes;
      counts.write_bytes += t.write_bytes;
      counts.latency_total_us += t.latency_total_us;
      counts.latency_max_us = std::max<uint64_t>(counts.latency_max_us, t.latency_max_us);
    }
    return counts;
  }
};

}  // namespace dst::server
