// VolumeAdder: `volume add NAME URI... [options]` in a running `serve` (docs/operations.md,
// "Volume commands"): a new volume is served beside the others, reachable by name once added.
//
// The steps, each refusal answered before anything is kept:
//   1. on the loop: the request checked as the configuration file's volumes are
//      (ValidateServeConfig); refused: a name already served (or being removed, or being added),
//      a URI that is a member of a served volume (one that is out included, which the return
//      watcher may bring back) or of an add under way;
//   2. on a thread, assembled volumes only: the members' superblocks (PlanAssembly: the same
//      plan, refusals and messages as at start) and, for mirror and raid10, the claim of
//      ownership (ClaimOwnership);
//   3. on the loop: the members, in the order the volume uses them, connected (NbdMember, one
//      attempt each, with the options they get at start; ETIMEDOUT after kAddConnectTimeout);
//   4. on the loop: the volume built over them; an assembled one opened (Open());
//   5. on the loop: installed as at start (InstallChecksummedVolume: the member adder, the return
//      watcher, the supersede hooks), its members in Server::members and member_refs, and its
//      export registered: `done` hears OK and the volume's summary ("mirror, 64 MiB") once a
//      client can connect to it.
// A failure in steps 3 or 4 abandons the members taken (connections closed) and keeps them and a
// volume that was opened in Server::retired_*, since a completion may still name them.
//
// Lifecycle: Stop() once the loop has stopped: it waits for the threads at work and answers
// nothing more.
//
// Threading: every call on the event loop's thread (Stop() once the loop has stopped); the
// threads touch only their own results.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <asio.hpp>

#include "aggregator/control/runtime.h"
#include "aggregator/off_loop.h"
#include "aggregator/serve_config.h"
#include "aggregator/volume_build.h"
#include "common/lifetime.h"
#include "common/status.h"

namespace dst::aggregator {

// The volume `volume add NAME [KEY=VALUE]... URI...` asks for (`words` from NAME on): KEY is a
// [[volume]] key of the configuration file (raw, layout, chunk, key-file, ...), with its values;
// the words that hold "://" are the members. Unset raw: assembled.
Status ParseVolumeAdd(const std::vector<std::string>& words, VolumeConfig* v);

class VolumeAdder {
 public:
  // As at start: a member that has not answered by then is unreachable.
  static constexpr std::chrono::seconds kAddConnectTimeout{15};
  // summary: "linear, 8 MiB".
  using Done = std::function<void(Status, const std::string& summary)>;

  // `config`: the settings serve runs with (its volumes are not looked at).
  VolumeAdder(control::Server& server, ServeConfig config);
  ~VolumeAdder();
  VolumeAdder(const VolumeAdder&) = delete;
  VolumeAdder& operator=(const VolumeAdder&) = delete;

  // `v.raw` unset: assembled.
  void Add(VolumeConfig v, Done done);
  // The settings later steps and adds use (a reload, aggregator/config_reloader.h).
  void SetConfig(ServeConfig config);
  void Stop();

 private:
  struct Job {
    VolumeConfig v;
    Done done;
    AssemblyPlan plan;
    std::vector<std::unique_ptr<member::NbdMember>> members;  // connected in step 3
    std::vector<volume::MemberTarget*> targets;               // by slot; nullptr: missing
    std::unique_ptr<integrity::ChecksummedVolume> opening;
    Status connect_status;                // the first member that could not be connected
    std::vector<std::string> connecting;  // the URIs whose connect has not answered yet
    std::shared_ptr<asio::steady_timer> connect_deadline;
  };
  // Why `v` may not be added now (Ok: it may).
  Status Check(VolumeConfig& v) const;
  void OnPlanned(uint64_t id, Status status);
  void OnConnected(uint64_t id);
  void OnConnectTimeout(uint64_t id);
  void OnOpened(uint64_t id, int err);
  void Install(uint64_t id, std::unique_ptr<volume::BlockDevice> volume);
  // Answers the job's refusal and lets go of what it took.
  void Fail(uint64_t id, Status status);

  control::Server& server_;
  ServeConfig config_;
  bool stopped_ = false;
  uint64_t next_job_ = 1;
  std::map<uint64_t, Job> jobs_;
  OffLoopWork work_;   // reads, formats and plans off the loop
  Lifetime lifetime_;  // last: expires first
};

}  // namespace dst::aggregator
