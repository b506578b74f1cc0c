// ExportRegistry: the volumes a server offers, by export name, and the
// client traffic of each. The empty name selects the default volume (the only
// one, or the configured default). Shared by every connection, which update
// the traffic.
//
// Threading: the registry and its volumes live on the home loop
// (event_loops.h) and are read and changed there only; a connection on
// another loop makes its lookups there (RunOn) and keeps an ExportView.
//
// A volume leaves while serving (`volume remove`) in two steps: Withdraw(), from
// which on no new client finds it (the error of an unknown export) while the
// connected ones end; then Remove(). Its traffic counters stay alive until the
// registry is destroyed, for connections still winding down.
//
// A raw volume may also have a copy on each event loop but home, over that loop's own member
// connections (aggregator/loop_volumes.h): the registry tells a connection placed on a loop which
// device it uses there (OnLoop). A copy is set once it is connected and forgotten with its
// volume; it lives on its loop, and only its address is kept here.
#pragma once

#include <algorithm>
#include <cerrno>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "aggregator/server/volume_traffic.h"
#include "aggregator/volume/block_device.h"
#include "aggregator/volume/merge_gate.h"

namespace dst::server {

// An export as a connection sees it, taken on the home loop: the volume (or the snapshot of it
// the client chose), and what the handshake and the checks of every request read of it, copied
// so that a connection on another loop reads the copy. None of it changes while it is served.
struct ExportView {
  volume::BlockDevice* volume = nullptr;
  std::shared_ptr<volume::BlockDevice> snapshot;
  std::string name;
  std::string description;
  uint64_t size = 0;
  volume::VolumeCapabilities caps;

  // What the client's requests go to.
  volume::BlockDevice& device() const { return snapshot ? *snapshot : *volume; }
  // Copies what is read of `device()`; `volume` and `snapshot` are set.
  void CopyFacts() {
    const volume::BlockDevice& d = device();
    name = d.name();
    description = d.description();
    size = d.size();
    caps = d.capabilities();
  }
};

// An event loop's own copy of a raw volume (aggregator/loop_volumes.h): the device, and the gate
// its writes pass while the volume has not merged (nullptr: a volume that never merges).
struct LoopCopy {
  volume::BlockDevice* device = nullptr;
  volume::MergeGate* gate = nullptr;
};

class ExportRegistry {
 public:
  // `loops`: the server's event loops, each of which counts its connections' traffic apart.
  explicit ExportRegistry(size_t loops = 1) : loops_(loops) {}

  void Add(volume::BlockDevice* volume) {
    volumes_.push_back(volume);
    traffic_.push_back(std::make_unique<VolumeTraffic>(loops_));
    on_loop_.emplace_back();
  }
  void SetDefault(std::string name) { default_name_ = std::move(name); }

  // nullptr when no volume has that name, or it is withdrawn.
  volume::BlockDevice* Find(std::string_view name) const {
    if (name.empty())
      name = default_name_.empty() && volumes_.size() == 1 ? std::string_view(volumes_[0]->name())
                                                           : std::string_view(default_name_);
    for (volume::BlockDevice* v : volumes_)
      if (v->name() == name && !Withdrawn(v)) return v;
    return nullptr;
  }
  // A snapshot export VOLUME@POINT (docs/staging-log.md, "Snapshots"): the volume's read-only
  // view as of POINT, in *snapshot, and the volume it belongs to in *volume. ENOENT for no such
  // volume; the volume's reason (EINVAL) for a point it does not have.
  Status FindSnapshot(std::string_view name, volume::BlockDevice** volume,
                      std::shared_ptr<volume::BlockDevice>* snapshot) const {
    const size_t at = name.rfind('@');
    volume::BlockDevice* v = at == std::string_view::npos ? nullptr : Find(name.substr(0, at));
    if (!v || at == 0) return Status::Error(ENOENT, "unknown export '" + std::string(name) + "'");
    DST_RETURN_IF_ERROR(v->OpenSnapshot(name.substr(at + 1), snapshot));
    *volume = v;
    return Status::Ok();
  }
  // Every volume, withdrawn ones included.
  const std::vector<volume::BlockDevice*>& volumes() const { return volumes_; }
  // Whether `volume` is here and not withdrawn: what a client that chose it may still use.
  bool Serves(const volume::BlockDevice* volume) const {
    return IndexOf(volume) < volumes_.size() && !Withdrawn(volume);
  }
  void Withdraw(const volume::BlockDevice* volume) { withdrawn_.push_back(volume); }
  bool Withdrawn(const volume::BlockDevice* volume) const {
    return std::find(withdrawn_.begin(), withdrawn_.end(), volume) != withdrawn_.end();
  }
  // Forgets a volume of this registry; its traffic lives on.
  void Remove(const volume::BlockDevice* volume) {
    const size_t i = IndexOf(volume);
    if (i == volumes_.size()) return;
    const auto at = static_cast<std::ptrdiff_t>(i);
    retired_traffic_.push_back(std::move(traffic_[i]));
    traffic_.erase(traffic_.begin() + at);
    on_loop_.erase(on_loop_.begin() + at);
    volumes_.erase(volumes_.begin() + at);
    std::erase(withdrawn_, volume);
  }
  // `copy` serves `volume` to the connections of event loop `loop` (not home). Ignored for a
  // volume no longer here.
  void SetOnLoop(const volume::BlockDevice* volume, size_t loop, LoopCopy copy) {
    const size_t i = IndexOf(volume);
    if (i == volumes_.size()) return;
    if (on_loop_[i].size() <= loop) on_loop_[i].resize(loop + 1);
    on_loop_[i][loop] = copy;
  }
  // The copy of `volume` that loop `loop` has of its own; its device is nullptr when it has none
  // (the loop reaches `volume` on the home loop).
  LoopCopy OnLoop(const volume::BlockDevice* volume, size_t loop) const {
    const size_t i = IndexOf(volume);
    return i < volumes_.size() && loop < on_loop_[i].size() ? on_loop_[i][loop] : LoopCopy{};
  }
  // The traffic counters of a volume of this registry.
  VolumeTraffic& TrafficOf(const volume::BlockDevice* volume) const {
    return *traffic_.at(IndexOf(volume));  // not ours (past the end): a caller bug, thrown
  }

 private:
  size_t IndexOf(const volume::BlockDevice* volume) const {
    return static_cast<size_t>(std::find(volumes_.begin(), volumes_.end(), volume) -
                               volumes_.begin());
  }

  size_t loops_;
  std::vector<volume::BlockDevice*> volumes_;
  std::vector<std::unique_ptr<VolumeTraffic>> traffic_;  // parallel to volumes_
  std::vector<std::vector<LoopCopy>> on_loop_;           // parallel: each loop's copy
  std::vector<const volume::BlockDevice*> withdrawn_;
  std::vector<std::unique_ptr<VolumeTraffic>> retired_traffic_;  // of removed volumes
  std::string default_name_;
};

}  // namespace dst::server
