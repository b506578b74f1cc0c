// StderrCapture: what this process writes to its standard error (fd 2)
// while the object lives, for tests that check the log lines of code running
// in the test process itself (dst's logging writes one line per write(2) to
// fd 2). A test shows Text() in the message of an assertion about it.
//
// Contract: captures nest (each restores what it found); Text() may be read
// at any time. Throws std::runtime_error if fd 2 cannot be redirected.
//
// Threading: redirects fd 2 for the whole process; create and destroy it on
// one thread, while no other test runs in the process.
#pragma once

#include <string>

#include "tests/harness/temp_dir.h"

namespace dst::test {

class StderrCapture {
 public:
  StderrCapture();
  ~StderrCapture();
  StderrCapture(const StderrCapture&) = delete;
  StderrCapture& operator=(const StderrCapture&) = delete;

  // Everything written to fd 2 since the capture began.
  std::string Text() const;

 private:
  TempDir dir_{"dst-stderr"};
  std::string path_;
  int saved_fd_ = -1;
};

}  // namespace dst::test
