// ExportSpec: everything the configuration says about one export. A plain
// value built by plugin_config.cc and consumed by FileExport::Open.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "nbdkit-plugin/access_rules.h"

namespace dst::plugin {

struct ExportSpec {
  std::string name;
  std::string file;
  std::string description;
  std::optional<uint64_t> size;  // create or extend the file to this size
  std::string size_text;         // as the user wrote it, for error messages
  bool readonly = false;
  bool direct = false;  // O_DIRECT for aligned requests
  AccessPolicy access;
  // Where the export was configured ("file=PATH" or "config=FILE:LINE"),
  // so that start-up errors point at the right place.
  std::string origin;
};

}  // namespace dst::plugin
