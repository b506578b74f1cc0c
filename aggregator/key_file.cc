#include "aggregator/key_file.h"

#include <string.h>  // explicit_bzero

#include <cerrno>
#include <fstream>

#include "common/checksum.h"
#include "common/key_file_mode.h"

namespace dst::aggregator {

// The file's bytes, exactly: a trailing newline is part of the key. At most one byte more than a
// key is read, so that naming /dev/urandom by mistake fails instead of reading forever, and the
// buffer is sized once, so no copy of the key is left behind in freed memory.
Status ReadKeyFile(const std::string& path, std::vector<uint8_t>* key) {
  DST_RETURN_IF_ERROR(CheckKeyFileMode(path, "--key-file " + path));
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::FromErrno(errno, "--key-file " + path);
  key->resize(kMaxChecksumKeySize + 1);
  in.read(reinterpret_cast<char*>(key->data()), static_cast<std::streamsize>(key->size()));
  if (in.bad()) return Status::FromErrno(errno, "--key-file " + path);
  key->resize(static_cast<size_t>(in.gcount()));
  if (key->size() < kMinKeyFileSize || key->size() > kMaxChecksumKeySize) {
    const std::string size =
        key->size() > kMaxChecksumKeySize ? "more than 64" : std::to_string(key->size());
    return Status::Invalid("--key-file " + path + " holds " + size +
                           " bytes: a checksum key is 16 to 64 bytes (e.g. (umask 077; head -c 32 "
                           "/dev/urandom > FILE))");
  }
  return Status::Ok();
}

Status CheckKeyFile(const std::string& path) {
  std::vector<uint8_t> key;
  const Status s = ReadKeyFile(path, &key);
  if (!key.empty()) explicit_bzero(key.data(), key.size());
  return s;
}

}  // namespace dst::aggregator
