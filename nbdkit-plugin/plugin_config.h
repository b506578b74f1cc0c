// PluginConfig: collects nbdkit's key=value parameters and turns them into a
// list of ExportSpecs, either the single export of file= or the exports of a
// TOML config= file, plus the plugin-wide settings (fence-wait=,
// parallel-requests=, debug-hold-write=) that either may give. Every error names the key and value
// (and, for config files, the file and line) so that nbdkit can stop with one clear line.
//
// Used only from nbdkit's single-threaded configuration phase.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
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

  // Fault injection for tests (debug-hold-write=OFFSET:MILLISECONDS): the
  // first write covering byte `offset` is held for `duration` before its
  // fence check, like a write delayed in transit.
  struct HoldWrite {
    uint64_t offset = 0;
    std::chrono::milliseconds duration{0};
  };

  const std::vector<ExportSpec>& exports() const { return exports_; }
  const std::string& default_export() const { return default_export_; }
  // How long a fenced open of a newer epoch waits for older writes.
  std::chrono::milliseconds fence_wait() const { return fence_wait_; }
  const std::optional<HoldWrite>& debug_hold_write() const { return debug_hold_write_; }
  // parallel-requests=true: the requests of one connection may run on
  // several threads (nbdkit's parallel model). Off by default: nbdkit before
  // 1.33.10 can abort under it when a client resets (docs/nbdkit-plugin.md).
  bool parallel_requests() const { return parallel_requests_; }

  static constexpr const char* kDefaultExportName = "default";
  static constexpr std::chrono::seconds kDefaultFenceWait{30};
  static const char* Help();

 private:
  Status LoadConfigFile();
  // Handles a plugin-wide key, from the command line or from the root table
  // of the config file (`where` names which), at most once in all.
  Status SetGlobal(std::string_view key, std::string_view value, const std::string& where);

  ExportSpec single_;  // the export of file=..., when there is no config=
  bool have_file_ = false;
  bool single_keys_used_ = false;  // a key that only makes sense with file=
  std::string config_path_;
  std::vector<ExportSpec> exports_;
  std::string default_export_;
  std::chrono::milliseconds fence_wait_ = kDefaultFenceWait;
  std::optional<HoldWrite> debug_hold_write_;
  std::string fence_wait_where_;  // where each global key was set, "" if not
  std::string hold_write_where_;
  std::string parallel_where_;
  bool parallel_requests_ = false;
};

// "true/false", "yes/no", "on/off", "1/0", case-insensitive.
bool ParseBool(std::string_view text, bool* value);

// "OFFSET:MILLISECONDS", OFFSET a size as for size= (e.g. 1M), MILLISECONDS a
// duration whose bare number is in milliseconds (e.g. 1500 or 2s).
Status ParseHoldWrite(std::string_view text, PluginConfig::HoldWrite* out);

}  // namespace dst::plugin
