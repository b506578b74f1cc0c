#include "aggregator/member/member_tls.h"

#include <fcntl.h>
#include <libnbd.h>
#include <string.h>  // explicit_bzero
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <climits>
#include <cstring>

#include "aggregator/member/libnbd_error.h"
#include "common/key_file_mode.h"
#include "common/log.h"

namespace dst::member {
namespace {

// A PSK file holds a few lines; anything far larger is not one.
constexpr off_t kMaxPskFileSize = 1 << 20;

// The file's bytes, wiped when this goes out of scope: they hold every key in the file.
class SecretText {
 public:
  SecretText() = default;
  ~SecretText() { explicit_bzero(text_.data(), text_.size()); }
  SecretText(const SecretText&) = delete;
  SecretText& operator=(const SecretText&) = delete;

  std::string& text() { return text_; }

 private:
  std::string text_;
};

Status ReadPskFile(const std::string& path, SecretText* out) {
  const std::string what = "member-tls-psk " + path;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::FromErrno(errno, what + ": open");
  struct stat st {};
  Status s;
  if (::fstat(fd, &st) != 0) {
    s = Status::FromErrno(errno, what + ": stat");
  } else if (!S_ISREG(st.st_mode) || st.st_size > kMaxPskFileSize) {
    s = Status::Invalid(what + ": not a PSK file (a small file of identity:hexkey lines)");
  } else if (Status mode = CheckKeyFileMode(st, path, what); !mode.ok()) {
    s = std::move(mode);
  } else {
    out->text().resize(static_cast<size_t>(st.st_size));
    const ssize_t n = ::read(fd, out->text().data(), out->text().size());
    if (n < 0) s = Status::FromErrno(errno, what + ": read");
    if (n >= 0) out->text().resize(static_cast<size_t>(n));
  }
  ::close(fd);
  return s;
}

// gnutls reads the key as hex (GNUTLS_PSK_KEY_HEX): an odd length or another character fails the
// handshake with a message that does not say why.
bool IsHexKey(std::string_view key) {
  return !key.empty() && key.size() % 2 == 0 &&
         std::all_of(key.begin(), key.end(), [](char c) { return std::isxdigit(c) != 0; });
}

// libnbd's rule (lib/crypto.c): the first line "IDENTITY:..." holds the key; "\r\n" is allowed.
Status FindKey(std::string_view file_text, const std::string& path, const std::string& identity) {
  while (!file_text.empty()) {
    const size_t end = file_text.find('\n');
    std::string_view line = file_text.substr(0, end);
    file_text.remove_prefix(end == std::string_view::npos ? file_text.size() : end + 1);
    if (line.ends_with('\r')) line.remove_suffix(1);
    if (!line.starts_with(identity) || line.size() <= identity.size() ||
        line[identity.size()] != ':')
      continue;
    if (IsHexKey(line.substr(identity.size() + 1))) return Status::Ok();
    return Status::Invalid("member-tls-psk " + path + ": the key of identity '" + identity +
                           "' is not an even number of hex digits");
  }
  return Status::Error(ENOENT,
                       "member-tls-psk " + path + ": no key for identity '" + identity + "'");
}

// libnbd's default identity is the login name, which a service started without a login session
// (systemd, a container) does not have; libnbd would only say "getlogin_r" at every connect.
Status DefaultIdentity(const std::string& path, std::string* out) {
  char name[LOGIN_NAME_MAX + 1] = {};
  const int err = ::getlogin_r(name, sizeof name);
  if (err == 0 && name[0] != '\0') {
    *out = name;
    return Status::Ok();
  }
  return Status::Error(err != 0 ? err : ENOENT,
                       "member-tls-psk " + path +
                           ": no member-tls-username, and no login name to default to (getlogin: " +
                           std::strerror(err != 0 ? err : ENOENT) + "): give member-tls-username");
}

// Every TLS member's identity must have a key: the URI's user if it names one (libnbd lets it
// win), else member-tls-username, else the login name.
Status CheckPskFile(const MemberTls& tls, const std::vector<std::string>& uris) {
  SecretText file;
  DST_RETURN_IF_ERROR(ReadPskFile(tls.psk_file, &file));
  for (const std::string& uri : uris) {
    if (!IsTlsUri(uri)) continue;
    std::string identity = UriUser(uri);
    if (identity.empty()) identity = tls.username;
    if (identity.empty()) DST_RETURN_IF_ERROR(DefaultIdentity(tls.psk_file, &identity));
    DST_RETURN_IF_ERROR(FindKey(file.text(), tls.psk_file, identity));
  }
  return Status::Ok();
}

bool Readable(const std::string& path) {
  return ::access(path.c_str(), R_OK) == 0;
}

// libnbd uses a directory without ca-cert.pem as if it had not been given (the system's CAs), and
// a client certificate without its key (or the reverse) as if there were none: both would surprise.
Status CheckCertificatesDir(const std::string& dir) {
  const std::string what = "member-tls-certificates " + dir;
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) return Status::FromErrno(errno, what);
  if (!S_ISDIR(st.st_mode)) return Status::Invalid(what + ": not a directory");
  if (!Readable(dir + "/ca-cert.pem"))
    return Status::Invalid(what + ": no readable ca-cert.pem (the CA that signed the members' " +
                           "certificates)");
  if (Readable(dir + "/client-cert.pem") != Readable(dir + "/client-key.pem"))
    return Status::Invalid(what + ": client-cert.pem and client-key.pem go together");
  return CheckKeyFileMode(dir + "/client-key.pem", what + ": client-key.pem");
}

}  // namespace

bool MemberTls::any() const {
  return !psk_file.empty() || !username.empty() || !certificates_dir.empty() ||
         verify_peer.has_value();
}

bool IsTlsUri(std::string_view uri) {
  return uri.starts_with("nbds://") || uri.starts_with("nbds+unix://");
}

std::string UriUser(std::string_view uri) {
  const size_t scheme_end = uri.find("://");
  if (scheme_end == std::string_view::npos) return "";
  std::string_view authority = uri.substr(scheme_end + 3);
  authority = authority.substr(0, authority.find_first_of("/?#"));
  const size_t at = authority.rfind('@');
  return at == std::string_view::npos ? "" : std::string(authority.substr(0, at));
}

namespace {

// libnbd checks no certificate over a Unix socket (there is no host name to
// check it against): encryption without authentication, worth a warning.
void WarnUnverifiedUnixMembers(const MemberTls& tls, const std::vector<std::string>& uris) {
  if (tls.certificates_dir.empty()) return;
  for (const std::string& uri : uris)
    if (uri.rfind("nbds+unix://", 0) == 0)
      LOG_WARNING(
          "member %s: X.509 over a Unix socket: the member's certificate is not checked "
          "(the socket's permissions authenticate it; use member-tls-psk to have it "
          "prove itself)",
          uri.c_str());
}

}  // namespace

Status CheckMemberTls(const MemberTls& tls, const std::vector<std::string>& uris) {
  if (!tls.any()) return Status::Ok();
  if (std::none_of(uris.begin(), uris.end(), [](const std::string& u) { return IsTlsUri(u); }))
    return Status::Invalid(
        "member TLS options are given, but no member uses TLS: name TLS members "
        "nbds://HOST[:PORT]/NAME or nbds+unix:///NAME?socket=PATH");
  if (!tls.psk_file.empty() && !tls.certificates_dir.empty())
    return Status::Invalid(
        "member-tls-psk and member-tls-certificates: give one, pre-shared keys or X.509");
  if (!tls.username.empty() && tls.psk_file.empty())
    return Status::Invalid(
        "member-tls-username is an identity in the member-tls-psk file: give member-tls-psk");
  if (!tls.psk_file.empty()) DST_RETURN_IF_ERROR(CheckPskFile(tls, uris));
  if (!tls.certificates_dir.empty())
    DST_RETURN_IF_ERROR(CheckCertificatesDir(tls.certificates_dir));
  WarnUnverifiedUnixMembers(tls, uris);
  return Status::Ok();
}

Status ApplyMemberTls(nbd_handle* handle, const MemberTls& tls, std::string_view uri) {
  if (nbd_set_uri_allow_local_file(handle, false) == -1) return LibnbdError(EINVAL);
  if (!IsTlsUri(uri)) {
    if (nbd_set_tls(handle, LIBNBD_TLS_DISABLE) == -1) return LibnbdError(EINVAL);
    return Status::Ok();
  }
  // nbd_aio_connect_uri requires TLS for nbds:// too; saying it here fails early, with libnbd's
  // own message, when libnbd was built without TLS.
  if (nbd_set_tls(handle, LIBNBD_TLS_REQUIRE) == -1 ||
      (!tls.psk_file.empty() && nbd_set_tls_psk_file(handle, tls.psk_file.c_str()) == -1) ||
      (!tls.username.empty() && nbd_set_tls_username(handle, tls.username.c_str()) == -1) ||
      (!tls.certificates_dir.empty() &&
       nbd_set_tls_certificates(handle, tls.certificates_dir.c_str()) == -1) ||
      (tls.verify_peer && nbd_set_tls_verify_peer(handle, *tls.verify_peer) == -1))
    return LibnbdError(EINVAL);
  return Status::Ok();
}

Status ExplainConnectFailure(Status status, std::string_view uri) {
  const std::string& message = status.message();
  const char* hint = nullptr;
  if (IsTlsUri(uri) && message.find("gnutls") != std::string::npos)
    hint =
        "TLS handshake failed: check the PSK identity and key, or the certificates, against "
        "the member's";
  else if (!IsTlsUri(uri) && message.find("requires TLS") != std::string::npos)
    hint =
        "the member requires TLS: name it nbds://HOST[:PORT]/NAME or "
        "nbds+unix:///NAME?socket=PATH";
  else if (message.find("local file access") != std::string::npos)
    hint =
        "give TLS credentials with --member-tls-psk or --member-tls-certificates, not in the "
        "URI";
  if (hint == nullptr) return status;
  return Status::Error(status.err(), message + " (" + hint + ")");
}

}  // namespace dst::member
