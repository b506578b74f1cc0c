#include "tests/harness/temp_dir.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <system_error>
#include <vector>

namespace dst::test {
namespace {

std::string TempRoot() {
  const char* env = std::getenv("TMPDIR");
  return env && *env ? env : "/tmp";
}

}  // namespace

TempDir::TempDir(std::string_view prefix) {
  std::string templ = TempRoot() + "/" + std::string(prefix) + ".XXXXXX";
  std::vector<char> buf(templ.begin(), templ.end());
  buf.push_back('\0');
  if (!mkdtemp(buf.data()))
    throw std::runtime_error("mkdtemp " + templ + ": " + std::strerror(errno));
  path_ = buf.data();
}

TempDir::~TempDir() {
  // Never throw from a destructor: a leftover directory is better than abort.
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

std::string TempDir::File(std::string_view name) const {
  return path_ + "/" + std::string(name);
}

}  // namespace dst::test
