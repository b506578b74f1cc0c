// Key files (TLS pre-shared keys, checksum keys, X.509 private keys) must be
// private to their owner, as ssh insists for its keys: a key that other
// users can read is no longer secret, and one they can change is theirs.
//
// Refused: any write permission for group or others; read permission for
// others; read permission for the group when the file belongs to the user
// the process runs as (who reads it as its owner, so the group bit only lets
// others in). Allowed: 0600, 0400, and a key owned by another user (root)
// that the process reads through its group (0640 root:GROUP, a common way to
// hand a key to a service). Only regular files are checked: a device or a
// pipe named by mistake (/dev/urandom) is for the reader to refuse.
//
// Threading: pure apart from stat(); callable from any thread.
#pragma once

#include <sys/stat.h>

#include <string>

#include "common/status.h"

namespace dst {

// EACCES naming `what` (e.g. "--tls-psk /etc/dst/keys.psk"), the mode and
// the fix when `st` (of the key file) is too open; OK otherwise.
Status CheckKeyFileMode(const struct stat& st, const std::string& path, const std::string& what);

// The same for the file at `path` (following symbolic links, as reading it
// does). A file that cannot be stat'ed is left to the reader to report.
Status CheckKeyFileMode(const std::string& path, const std::string& what);

}  // namespace dst
