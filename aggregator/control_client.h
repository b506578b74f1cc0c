// The client side of the control socket: one request line to a running aggregator and its whole
// answer, for `status`, `scrub`, `resync-rate` and `member`. The default control socket in a shared
// temporary directory is used only if its directory is ours (control/control_path.h), and an
// answer is read up to a bound.
//
// Threading: blocking, on the calling thread.
#pragma once

#include <string>

#include <CLI/CLI.hpp>

#include "common/status.h"

namespace dst::aggregator {

// --control PATH on a command that talks to a running aggregator.
void AddControlOption(CLI::App& command, std::string* control);

// `control`: --control as given ("" for DefaultControlPath()). `request` ends in a newline.
// Errors when the aggregator cannot be reached, does not answer in time or closes without
// answering.
Status AskControl(const std::string& control, const std::string& request, std::string* answer);

// For commands that act: prints an "ok: ..." answer on stdout (exit 0), an "error: ..." answer
// or a failure to ask on stderr as the command's one error line (exit 1).
int RunControlCommand(const std::string& control, const std::string& request);

}  // namespace dst::aggregator
