#include "common/key_file_mode.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>

namespace dst {

namespace {

// What the mode lets others do with the key; nullptr if nothing.
const char* Exposure(const struct stat& st) {
  if (st.st_mode & (S_IWGRP | S_IWOTH)) return "lets other users change it";
  if (st.st_mode & S_IROTH) return "lets every user read it";
  if ((st.st_mode & S_IRGRP) && st.st_uid == ::geteuid()) return "lets its group read it";
  return nullptr;
}

}  // namespace

Status CheckKeyFileMode(const struct stat& st, const std::string& path, const std::string& what) {
  if (!S_ISREG(st.st_mode)) return Status::Ok();
  const char* exposure = Exposure(st);
  if (exposure == nullptr) return Status::Ok();
  char mode[8];
  std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
  return Status::Error(EACCES, what + ": mode " + mode + " " + exposure +
                                   ", and it holds a secret key; refusing to use it (chmod 600 " +
                                   path + ")");
}

Status CheckKeyFileMode(const std::string& path, const std::string& what) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return Status::Ok();
  return CheckKeyFileMode(st, path, what);
}

}  // namespace dst
