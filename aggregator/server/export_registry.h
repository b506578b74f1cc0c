// ExportRegistry: the volumes a server offers, by export name. The empty
// name selects the default volume (the only one, or the configured default).
// Immutable while serving; shared by every connection on the event loop.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "aggregator/volume/block_device.h"

namespace dst::server {

class ExportRegistry {
 public:
  void Add(volume::BlockDevice* volume) { volumes_.push_back(volume); }
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

 private:
  std::vector<volume::BlockDevice*> volumes_;
  std::string default_name_;
};

}  // namespace dst::server
