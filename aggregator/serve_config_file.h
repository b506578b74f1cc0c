// The TOML config file of `dst-aggregator serve --config FILE` (docs/aggregator.md): every key is
// read by its option's own parser (serve_options.h), so a key and its --NAME accept the same
// values with the same messages; errors name the file, line and key.
//
// Threading: pure functions.
#pragma once

#include <string>
#include <string_view>

#include "aggregator/serve_config.h"
#include "common/status.h"

namespace dst::aggregator {

// Reads a TOML file into *config (keys not in the file keep their values).
Status LoadServeConfig(const std::string& path, ServeConfig* config);
// The same for TOML text; `source` names it in errors.
Status ParseServeConfig(std::string_view text, const std::string& source, ServeConfig* config);

}  // namespace dst::aggregator
