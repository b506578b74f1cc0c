// TLS for clients of the aggregator (NBD_OPT_STARTTLS): the configuration,
// the PSK file format that nbdkit, qemu and libnbd use, and the OpenSSL
// server context built from them. TLS 1.2 and 1.3 only.
//
// Credentials are either pre-shared keys (a file of `identity:hexkey`
// lines, as psktool writes them) or X.509 (a directory with
// server-cert.pem and server-key.pem, plus ca-cert.pem to verify client
// certificates), never both: one connection has one way to authenticate.
//
// Threading: the context is built once at start-up and then only read.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <asio/ssl.hpp>

#include "common/status.h"

namespace dst::server {

enum class TlsMode {
  kOff,      // STARTTLS is refused (NBD_REP_ERR_UNSUP)
  kOn,       // clients may start TLS; plain clients are served too
  kRequire,  // every option but STARTTLS and ABORT gets NBD_REP_ERR_TLS_REQD before TLS
};

struct TlsConfig {
  TlsMode mode = TlsMode::kOff;
  std::string psk_file;          // identity:hexkey lines
  std::string certificates_dir;  // server-cert.pem, server-key.pem[, ca-cert.pem]
  bool verify_peer = false;      // X.509: require a client certificate signed by ca-cert.pem
};

// "off", "on" or "require".
bool ParseTlsMode(const std::string& text, TlsMode* mode);
const char* TlsModeName(TlsMode mode);

// Checks the combination without reading any file: credentials are needed
// unless the mode is off, and only one kind of them. Errors name the option.
Status CheckTlsConfig(const TlsConfig& config);

// identity -> key, from a PSK file. Errors name the file and line.
using PskKeys = std::map<std::string, std::vector<uint8_t>>;
Status LoadPskFile(const std::string& path, PskKeys* keys);

// The server context for `config` (mode not off). The PSK keys, if any, live
// as long as the context: ServerTls owns both.
class ServerTls {
 public:
  static Status Create(const TlsConfig& config, std::unique_ptr<ServerTls>* out);
  ~ServerTls();

  TlsMode mode() const { return mode_; }
  asio::ssl::context& context() { return context_; }
  // The identity and key of a PSK identity, or nullptr; for the handshake.
  const PskKeys::value_type* Find(const std::string& identity) const;

 private:
  explicit ServerTls(TlsMode mode);
  Status UsePsk(const std::string& path);
  Status UseCertificates(const std::string& dir, bool verify_peer);

  TlsMode mode_;
  asio::ssl::context context_;
  PskKeys keys_;
};

// The PSK identity a TLS connection of a ServerTls authenticated with; "" if
// none (X.509).
std::string PskIdentity(SSL* ssl);

}  // namespace dst::server
