#include "aggregator/control/control_path.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>

namespace dst::control {

std::string PrivateControlDir() {
  if (::geteuid() == 0) return "";
  if (const char* runtime = std::getenv("XDG_RUNTIME_DIR"); runtime && *runtime) return "";
  const char* tmp = std::getenv("TMPDIR");
  const std::string base = tmp && *tmp ? tmp : "/tmp";
  return base + "/dst-aggregator-" + std::to_string(::geteuid());
}

std::string DefaultControlPath() {
  if (::geteuid() == 0) return "/run/dst-aggregator.sock";
  if (const char* runtime = std::getenv("XDG_RUNTIME_DIR"); runtime && *runtime)
    return std::string(runtime) + "/dst-aggregator.sock";
  return PrivateControlDir() + "/control.sock";
}

Status CheckPrivateDir(const std::string& dir, bool create) {
  if (create && ::mkdir(dir.c_str(), 0700) == 0) {
    if (::chmod(dir.c_str(), 0700) != 0) return Status::FromErrno(errno, "chmod " + dir);
  } else if (create && errno != EEXIST) {
    return Status::FromErrno(errno, "control directory " + dir);
  }
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0) return Status::FromErrno(errno, "control directory " + dir);
  const std::string refused = "control directory " + dir + ": ";
  const std::string advice =
      ": another user may have made it; not using it (remove it, or give --control PATH)";
  if (!S_ISDIR(st.st_mode)) return Status::Error(EPERM, refused + "not a directory" + advice);
  if (st.st_uid != ::geteuid())
    return Status::Error(EPERM, refused + "owned by uid " + std::to_string(st.st_uid) +
                                    ", not by us (uid " + std::to_string(::geteuid()) + ")" +
                                    advice);
  if ((st.st_mode & 07777) != 0700) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return Status::Error(EPERM, refused + "mode " + mode + ", not 0700" + advice);
  }
  return Status::Ok();
}

}  // namespace dst::control
