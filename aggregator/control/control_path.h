// Where the control socket of `dst-aggregator serve` lives when --control does not say, and the
// check that keeps a shared temporary directory from handing it to someone else: the socket then
// goes in a directory of our own (mode 0700), and serve and status both refuse one that another
// user could have made or changed.
//
// Threading: blocking file-system calls; any thread.
#pragma once

#include <string>

#include "common/status.h"

namespace dst::control {

// /run/dst-aggregator.sock for root, else $XDG_RUNTIME_DIR/dst-aggregator.sock, else
// control.sock in PrivateControlDir().
std::string DefaultControlPath();
// The directory of our own that holds the default control socket when there is no
// $XDG_RUNTIME_DIR: dst-aggregator-UID in $TMPDIR (or /tmp), where other users can create
// files. "" when the default path is elsewhere.
std::string PrivateControlDir();
// Refuses `dir` unless it is a directory (not a symbolic link) owned by us with mode 0700, so
// that nobody else can have put a socket there; creates it first when `create` and absent.
// EPERM, saying what is wrong and what to do, for one that is not.
Status CheckPrivateDir(const std::string& dir, bool create);

}  // namespace dst::control
