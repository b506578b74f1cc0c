// The options of `dst-aggregator serve`, defined once. Each has a name (the config file's key,
// and --NAME on the command line), a help text, and one parser that the command line and the
// config file both use, so that names, ranges and error messages cannot drift apart. Defaults
// are whatever ServeConfig{} and VolumeConfig{} hold; --help shows them through the same table.
//
//   top level:  ServeOptions(): command-line options and top-level keys of the file
//   volumes:    VolumeOptions(): keys of a [[volume]] table, and on the command line the options
//               of the one volume given by its member URIs
//
// Threading: pure data and functions.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "aggregator/serve_config.h"
#include "common/status.h"

namespace dst::aggregator {

// How a value is written in the config file. On the command line every value is text.
enum class OptionForm : uint8_t {
  kText,      // a string: fencing = "auto"
  kNumber,    // an integer, or a string holding one: connections = 4, retries = "5"
  kQuantity,  // a number with an optional unit: io-timeout = 5 or "500ms", table-cache = "64M"
  kBoolean,   // true or false; on the command line a flag: --raw, --no-raw
  kTextList,  // an array of strings; on the command line an option given once per item
};

template <typename Config>
struct Option {
  std::string_view name;
  OptionForm form;
  std::string_view help;
  // Applies one value (of a list: one item) to *config. The error says what was expected and
  // never names the option or where the value came from: the caller adds that, as
  // "--NAME VALUE: " on the command line and "FILE:LINE: NAME: " in the file.
  Status (*apply)(std::string_view value, Config* config);
  // The value as it is written (a list's items joined with ","): --help shows it as the
  // default, and it reads back to the same setting.
  std::string (*show)(const Config& config);
};

using ServeOption = Option<ServeConfig>;
using VolumeOption = Option<VolumeConfig>;

std::span<const ServeOption> ServeOptions();
std::span<const VolumeOption> VolumeOptions();
// nullptr when there is no such option.
const ServeOption* FindServeOption(std::string_view name);
const VolumeOption* FindVolumeOption(std::string_view name);

}  // namespace dst::aggregator
