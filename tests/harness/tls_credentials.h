// Test credentials for TLS, made at test time with GnuTLS's psktool and
// certtool (the tools NBD users make theirs with), in a TempDir:
//   - PskFile: an `identity:hexkey` file as nbdkit, qemu, libnbd and the
//     aggregator read it;
//   - X509Dir: a directory in the layout nbdkit, qemu and libnbd share:
//     ca-cert.pem, server-cert.pem/server-key.pem (for localhost and
//     127.0.0.1), client-cert.pem/client-key.pem, all signed by the CA.
// Key files are mode 0600, as the aggregator requires of them.
// Throws std::runtime_error if a tool fails.
#pragma once

#include <string>

#include "tests/harness/temp_dir.h"

namespace dst::test {

class PskFile {
 public:
  explicit PskFile(const std::string& identity);
  const std::string& path() const { return path_; }
  // The directory holding it as keys.psk (qemu's tls-creds-psk wants a dir).
  const std::string& dir() const { return dir_.path(); }

 private:
  TempDir dir_{"dst-psk"};
  std::string path_;
};

class X509Dir {
 public:
  // `client_cn`: the common name of the client certificate.
  explicit X509Dir(const std::string& client_cn = "dst-test-client");
  const std::string& path() const { return dir_.path(); }

 private:
  TempDir dir_{"dst-pki"};
};

}  // namespace dst::test
