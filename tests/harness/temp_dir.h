// TempDir: a fresh private directory (mkdtemp under $TMPDIR, else /tmp) that
// is removed recursively, with everything in it, when the object dies. Tests
// put backing files, sockets, pidfiles and captured output there so that a
// failing test leaves nothing behind. Throws std::runtime_error on failure.
#pragma once

#include <string>
#include <string_view>

namespace dst::test {

class TempDir {
 public:
  explicit TempDir(std::string_view prefix = "dst-test");
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  // path()/name; the file itself is not created.
  std::string File(std::string_view name) const;

 private:
  std::string path_;
};

}  // namespace dst::test
