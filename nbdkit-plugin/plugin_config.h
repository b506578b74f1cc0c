// PluginConfig: collects nbdkit's key=value parameters and turns them into a
// list of ExportSpecs, either the single export of file= or the exports of a
// TOML config= file. Every error names the key and value (and, for config
// files, the file and line) so that nbdkit can stop with one clear line.
//
// Used only from nbdkit's single-threaded configuration phase.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "nbdkit-plugin/export_spec.h"

namespace dst::plugin {

class PluginConfig {
 public:
  // Handles one key=value; unknown keys and bad values are errors.
  Status Set(std::string_view key, std::string_view value);
  // Checks the parameters as a whole and builds the exports.
  Status Complete();

  const std::vector<ExportSpec>& exports() const { return exports_; }
  const std::string& default_export() const { return default_export_; }

  static constexpr const char* kDefaultExportName = "default";
  static const char* Help();

 private:
  Status LoadConfigFile();

  ExportSpec single_;  // the export of file=..., when there is no config=
  bool have_file_ = false;
  bool single_keys_used_ = false;  // a key that only makes sense with file=
  std::string config_path_;
  std::vector<ExportSpec> exports_;
  std::string default_export_;
};

// "true/false", "yes/no", "on/off", "1/0", case-insensitive.
bool ParseBool(std::string_view text, bool* value);

}  // namespace dst::plugin
