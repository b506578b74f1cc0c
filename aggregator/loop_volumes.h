// LoopVolumes: each event loop's own copy of the raw volumes (serve --threads N).
//
// A client connection on a loop other than home reaches a volume that lives on the home loop
// through a HomeLoopDevice (server/home_loop_device.h): each request crosses threads twice, and
// the home loop's one core does the volume and member work of every client. A raw volume (linear
// or stripe, no checksums, no staging log) shares nothing between its requests but counters, so
// each loop but home gets a copy of it: an NbdMember per member of its own (its own connections,
// transactions, deadlines, reconnects and keepalive, all on that loop) and a Volume with the same
// layout over them. A connection placed on a loop whose copy is connected uses the copy
// (ExportRegistry::OnLoop): its requests take no lock and cross no thread (but see below).
//
// A volume is copied only if every member advertises multi-conn: a flush on one of a member's
// connections then covers the writes answered on all of them (NBD's multi-conn rule), so a
// client's flush, made by its loop's copy, covers what went through the other loops. Otherwise
// the volume is served from home alone, as with one loop, and the log says why. A volume whose
// minimum block is over one byte merges its unaligned writes on the home loop, under a range lock
// that does not see the copies' writes: its copies write only until its first merge, and from
// then on through the home loop (MergeGate, server/loop_copy_device.h).
//
// A copy whose members do not all connect within 15 s (a member down at that moment, or a
// server that takes no more connections) is given up with a warning: its loop's clients go
// through the home loop, whose members reconnect as always. A copy's member lost later
// reconnects on its own, like any NbdMember.
//
// Status stays exact: the members of each copy are added to their member's status
// (control::MemberRef::loop_copies), which sums counters, connections and I/O in flight over
// the loops and shows the worst state.
//
// Threading: constructed, Replicate and Forget on the home loop. A copy is built, used and
// abandoned on its own loop; the copies are destroyed with the LoopVolumes, on the home loop's
// thread after the other loops are stopped and their threads joined.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "aggregator/member/member_tls.h"
#include "aggregator/member/transaction_policy.h"
#include "aggregator/serve_config.h"
#include "aggregator/volume/merge_gate.h"
#include "aggregator/volume/volume.h"
#include "common/status.h"

namespace dst::control {
struct Server;
}

namespace dst::aggregator {

class LoopVolumes {
 public:
  // What every copy's members are made with, as the home loop's are.
  struct Settings {
    unsigned connections = 1;  // per member and loop
    member::TransactionOptions transactions;
    member::MemberTls tls;
  };

  // `server.loops` is set (more than one loop) and outlives this.
  LoopVolumes(control::Server& server, Settings settings);
  ~LoopVolumes();
  LoopVolumes(const LoopVolumes&) = delete;
  LoopVolumes& operator=(const LoopVolumes&) = delete;

  // Whether `volume` can have copies (every member allows multi-conn); if not, why in *why.
  static bool Copyable(const volume::Volume& volume, std::string* why);
  // Builds a copy of `volume` (served, raw, configured as `v`) on every loop but home, or logs
  // why it does not.
  // A volume whose minimum block is over one byte gets a MergeGate (volume/merge_gate.h), which
  // its first merge closes.
  void Replicate(volume::Volume& volume, const VolumeConfig& v);
  // `volume` is removed: no connection uses its copies from now on, and their members are
  // abandoned on their loops.
  void Forget(const volume::BlockDevice* volume);

 private:
  struct Copy;
  void Build(Copy& copy);                                 // on the copy's loop
  void Connected(Copy& copy, const Status& first_error);  // on the copy's loop
  void Built(Copy& copy, const Status& status);           // on the home loop
  // Calls `done` on the home loop once no copy has a write through `gate` in flight.
  void AwaitDrained(std::shared_ptr<volume::MergeGate> gate, std::function<void()> done);
  // Abandons the copy's members, on its loop.
  void Abandon(Copy& copy, const std::string& why);

  control::Server& server_;
  const Settings settings_;
  std::vector<std::unique_ptr<Copy>> copies_;
};

}  // namespace dst::aggregator
