#include "tests/harness/stderr_capture.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace dst::test {

StderrCapture::StderrCapture() : path_(dir_.File("stderr")) {
  const int file = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (file < 0) throw std::runtime_error("open " + path_ + ": " + std::strerror(errno));
  saved_fd_ = ::fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 3);
  const bool redirected = saved_fd_ >= 0 && ::dup2(file, STDERR_FILENO) >= 0;
  const int err = errno;
  ::close(file);
  if (!redirected) {
    if (saved_fd_ >= 0) ::close(saved_fd_);
    throw std::runtime_error(std::string("redirect stderr: ") + std::strerror(err));
  }
}

StderrCapture::~StderrCapture() {
  ::dup2(saved_fd_, STDERR_FILENO);
  ::close(saved_fd_);
}

std::string StderrCapture::Text() const {
  std::ifstream in(path_, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

}  // namespace dst::test
