#include "aggregator/server/tls.h"

#include <string.h>  // explicit_bzero

#include <cerrno>
#include <cstring>
#include <fstream>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "common/key_file_mode.h"
#include "common/log.h"

namespace dst::server {

namespace {

// PSK keys and the ciphers that use them: TLS 1.2 PSK suites with forward
// secrecy first (TLS 1.3 suites are configured apart and all allowed).
constexpr char kPskCiphers[] = "ECDHEPSK:DHEPSK:PSK:!eNULL:!3DES:!RSAPSK";
constexpr size_t kMaxPskKey = 512;  // OpenSSL's PSK_MAX_PSK_LEN

std::string OpenSslError() {
  const unsigned long code = ERR_get_error();
  ERR_clear_error();
  if (code == 0) return "unknown OpenSSL error";
  char text[256];
  ERR_error_string_n(code, text, sizeof text);
  return text;
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool ParseHexKey(const std::string& hex, std::vector<uint8_t>* key) {
  if (hex.empty() || hex.size() % 2 != 0 || hex.size() / 2 > kMaxPskKey) return false;
  key->clear();
  for (size_t i = 0; i < hex.size(); i += 2) {
    const int hi = HexValue(hex[i]), lo = HexValue(hex[i + 1]);
    if (hi < 0 || lo < 0) return false;
    key->push_back(static_cast<uint8_t>(hi * 16 + lo));
  }
  return true;
}

// Where the context keeps its ServerTls. Not the "app data" slot: asio::ssl
// keeps its own verify callback there and deletes it with the context.
int ServerTlsIndex() {
  static const int index = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

// Where a connection keeps the identity it authenticated with (a key of the
// ServerTls's map, which outlives every connection).
int IdentityIndex() {
  static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

// OpenSSL's server PSK callback, for TLS 1.2 and (through its compatibility
// path, with SHA-256 suites) TLS 1.3 external PSKs as GnuTLS clients send.
unsigned int FindPsk(SSL* ssl, const char* identity, unsigned char* psk, unsigned int max_len) {
  const auto* tls =
      static_cast<const ServerTls*>(SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ServerTlsIndex()));
  const auto* entry = identity ? tls->Find(identity) : nullptr;
  if (!entry || entry->second.size() > max_len) return 0;  // unknown: the handshake fails
  SSL_set_ex_data(ssl, IdentityIndex(), const_cast<std::string*>(&entry->first));
  std::memcpy(psk, entry->second.data(), entry->second.size());
  return static_cast<unsigned int>(entry->second.size());
}

}  // namespace

bool ParseTlsMode(const std::string& text, TlsMode* mode) {
  if (text == "off")
    *mode = TlsMode::kOff;
  else if (text == "on")
    *mode = TlsMode::kOn;
  else if (text == "require")
    *mode = TlsMode::kRequire;
  else
    return false;
  return true;
}

const char* TlsModeName(TlsMode mode) {
  switch (mode) {
    case TlsMode::kOff:
      return "off";
    case TlsMode::kOn:
      return "on";
    case TlsMode::kRequire:
      return "require";
  }
  return "?";
}

Status CheckTlsConfig(const TlsConfig& config) {
  const bool psk = !config.psk_file.empty(), x509 = !config.certificates_dir.empty();
  if (psk && x509) return Status::Invalid("--tls-psk and --tls-certificates: give only one");
  if (config.mode == TlsMode::kOff) {
    if (psk || x509 || config.verify_peer)
      return Status::Invalid("TLS credentials given but --tls is off (use --tls=on or require)");
    return Status::Ok();
  }
  if (!psk && !x509)
    return Status::Invalid(std::string("--tls=") + TlsModeName(config.mode) +
                           " needs --tls-psk FILE or --tls-certificates DIR");
  if (config.verify_peer && !x509)
    return Status::Invalid("--tls-verify-peer needs --tls-certificates (X.509)");
  return Status::Ok();
}

Status LoadPskFile(const std::string& path, PskKeys* keys) {
  DST_RETURN_IF_ERROR(CheckKeyFileMode(path, "--tls-psk " + path));
  std::ifstream in(path);
  if (!in) return Status::FromErrno(errno, "--tls-psk " + path);
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    if (line.empty()) continue;
    const std::string where = "--tls-psk " + path + ":" + std::to_string(number);
    const size_t colon = line.find(':');
    if (colon == 0 || colon == std::string::npos)
      return Status::Invalid(where + ": expected identity:hexkey");
    const std::string identity = line.substr(0, colon);
    std::vector<uint8_t> key;
    const bool valid = ParseHexKey(line.substr(colon + 1), &key);
    explicit_bzero(line.data(), line.size());  // the hex key is as secret as the key
    if (!valid) return Status::Invalid(where + ": the key is not an even number of hex digits");
    (*keys)[identity] = std::move(key);
  }
  if (keys->empty()) return Status::Invalid("--tls-psk " + path + ": no key in the file");
  return Status::Ok();
}

ServerTls::ServerTls(TlsMode mode) : mode_(mode), context_(asio::ssl::context::tls_server) {}

ServerTls::~ServerTls() {
  for (auto& [identity, key] : keys_)
    explicit_bzero(key.data(), key.size());
}

Status ServerTls::Create(const TlsConfig& config, std::unique_ptr<ServerTls>* out) {
  DST_RETURN_IF_ERROR(CheckTlsConfig(config));
  std::unique_ptr<ServerTls> tls(new ServerTls(config.mode));
  SSL_CTX* ctx = tls->context_.native_handle();
  // The NBD spec: TLS 1.2 at least, older versions only on request (never).
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
  SSL_CTX_set_ex_data(ctx, ServerTlsIndex(), tls.get());
  if (!config.psk_file.empty())
    DST_RETURN_IF_ERROR(tls->UsePsk(config.psk_file));
  else
    DST_RETURN_IF_ERROR(tls->UseCertificates(config.certificates_dir, config.verify_peer));
  *out = std::move(tls);
  return Status::Ok();
}

Status ServerTls::UsePsk(const std::string& path) {
  DST_RETURN_IF_ERROR(LoadPskFile(path, &keys_));
  SSL_CTX* ctx = context_.native_handle();
  if (SSL_CTX_set_cipher_list(ctx, kPskCiphers) != 1)
    return Status::Invalid("PSK ciphers: " + OpenSslError());
  SSL_CTX_set_dh_auto(ctx, 1);  // DHE-PSK suites need parameters
  SSL_CTX_set_psk_server_callback(ctx, FindPsk);
  return Status::Ok();
}

Status ServerTls::UseCertificates(const std::string& dir, bool verify_peer) {
  asio::error_code ec;
  const std::string cert = dir + "/server-cert.pem", key = dir + "/server-key.pem";
  context_.use_certificate_chain_file(cert, ec);
  if (ec) return Status::Invalid("--tls-certificates: " + cert + ": " + ec.message());
  DST_RETURN_IF_ERROR(CheckKeyFileMode(key, "--tls-certificates: " + key));
  context_.use_private_key_file(key, asio::ssl::context::pem, ec);
  if (ec) return Status::Invalid("--tls-certificates: " + key + ": " + ec.message());
  if (SSL_CTX_check_private_key(context_.native_handle()) != 1)
    return Status::Invalid("--tls-certificates: " + key + " does not match " + cert);
  if (!verify_peer) {
    // The server proves itself, the clients do not: anyone who can connect
    // gets in, which --tls=require may wrongly suggest is not so.
    if (mode_ == TlsMode::kRequire)
      LOG_WARNING(
          "--tls=require with X.509 but without --tls-verify-peer: clients are not "
          "authenticated, anyone who can connect gets access; TLS only keeps the network from "
          "reading or changing the traffic (add --tls-verify-peer to require client "
          "certificates signed by %s/ca-cert.pem)",
          dir.c_str());
    return Status::Ok();
  }
  const std::string ca = dir + "/ca-cert.pem";
  context_.load_verify_file(ca, ec);
  if (ec) return Status::Invalid("--tls-verify-peer: " + ca + ": " + ec.message());
  context_.set_verify_mode(asio::ssl::verify_peer | asio::ssl::verify_fail_if_no_peer_cert, ec);
  if (ec) return Status::Invalid("--tls-verify-peer: " + ec.message());
  return Status::Ok();
}

const PskKeys::value_type* ServerTls::Find(const std::string& identity) const {
  const auto it = keys_.find(identity);
  return it == keys_.end() ? nullptr : &*it;
}

std::string PskIdentity(SSL* ssl) {
  const auto* identity = static_cast<const std::string*>(SSL_get_ex_data(ssl, IdentityIndex()));
  return identity ? *identity : "";
}

}  // namespace dst::server
