// ExportRegistry: the volumes a server offers, by export name, and the
// client traffic of each. The empty name selects the default volume (the only
// one, or the configured default). The set of volumes is fixed while serving;
// shared by every connection on the event loop, which update the traffic.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "aggregator/server/volume_traffic.h"
#include "aggregator/volume/block_device.h"

namespace dst::server {

class ExportRegistry {
 public:
  void Add(volume::BlockDevice* volume) {
    volumes_.push_back(volume);
    traffic_.push_back(std::make_unique<VolumeTraffic>());
  }
  void SetDefault(std::string name) { default_name_ = std::move(name); }

  // nullptr when no volume has that name.
  volume::BlockDevice* Find(std::string_view name) const {
    if (name.empty())
      name = default_name_.empty() && volumes_.size() == 1 ? std::string_view(volumes_[0]->name())
                                                           : std::string_view(default_name_);
    for (volume::BlockDevice* v : volumes_)
      if (v->name() == name) return v;
    return nullptr;
  }
  const std::vector<volume::BlockDevice*>& volumes() const { return volumes_; }
  // The traffic counters of a volume of this registry.
  VolumeTraffic& TrafficOf(const volume::BlockDevice* volume) const {
    for (size_t i = 0; i < volumes_.size(); ++i)
      if (volumes_[i] == volume) return *traffic_[i];
    return *traffic_.at(volumes_.size());  // not ours: a caller bug, thrown
  }

 private:
  std::vector<volume::BlockDevice*> volumes_;
  std::vector<std::unique_ptr<VolumeTraffic>> traffic_;  // parallel to volumes_
  std::string default_name_;
};

}  // namespace dst::server
