// MemberTls: how the aggregator authenticates itself to TLS members (nbds://HOST[:PORT]/NAME,
// nbds+unix:///NAME?socket=PATH), the checks made on those options before anything connects,
// and their application to a libnbd handle (docs/security.md).
//
// Contract:
// - One set of credentials serves every member of an aggregator (and of one create or inspect
//   run). TLS members get TLS required, with these credentials; plain members (nbd://,
//   nbd+unix://) stay plain whatever is given.
// - ApplyMemberTls is called on every handle before nbd_aio_connect_uri: the data path
//   (NbdConnection, reconnects included) and the one-shot metadata I/O alike, so no connection
//   to a member escapes the options. A URI may never name a local file (libnbd's tls-psk-file
//   query parameter): secrets come from the options, not from URIs that end up in logs.
// - CheckMemberTls refuses, with one message naming the option and the file, what would only
//   fail later at connect (or, worse, silently fall back to other credentials): a missing or
//   unreadable PSK file, no key for the identity, a certificates directory without ca-cert.pem.
//
// Threading: ApplyMemberTls touches only the given handle; the rest is pure apart from reading
// the named files. Any thread.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

struct nbd_handle;  // libnbd

namespace dst::member {

struct MemberTls {
  // Pre-shared keys: a file of "identity:hexkey" lines (psktool's format). Empty: X.509.
  std::string psk_file;
  // The identity to use from psk_file. Empty: libnbd's default, the login name (getlogin), or
  // the user part of the URI (nbds://alice@host/...) where there is one.
  std::string username;
  // X.509: a directory with ca-cert.pem and, for client certificates, client-cert.pem and
  // client-key.pem (and optionally ca-crl.pem). Empty with no psk_file: libnbd's defaults
  // (/etc/pki/libnbd for root, else ~/.pki/libnbd or ~/.config/pki/libnbd, else the system's
  // trusted CAs).
  std::string certificates_dir;
  // X.509 over TCP: check the member's certificate against the URI's host name. Unset: libnbd's
  // default (check).
  std::optional<bool> verify_peer;

  // Whether any option was given.
  bool any() const;
};

// nbds:// or nbds+unix://.
bool IsTlsUri(std::string_view uri);

// The user part of a URI's authority ("alice" in nbds://alice@host/x), or "".
std::string UriUser(std::string_view uri);

// Checks the options against each other and against the member URIs, and reads the files they
// name: options without any TLS member are refused (they would protect nothing); a PSK file must
// hold a well-formed key for the identity each TLS member will use; a certificates directory must
// hold ca-cert.pem, and client-cert.pem and client-key.pem together or not at all. Messages name
// the option as the config file spells it ("member-tls-psk FILE: ...").
Status CheckMemberTls(const MemberTls& tls, const std::vector<std::string>& uris);

// Sets `handle` up for connecting to `uri`: no local files from the URI; for a TLS member, TLS
// required with these credentials; for a plain one, TLS disabled. Returns libnbd's error.
Status ApplyMemberTls(nbd_handle* handle, const MemberTls& tls, std::string_view uri);

// A failed connect to `uri`, with a hint where libnbd's message does not say what to do: a TLS
// handshake that broke (gnutls says how, "The TLS connection was non-properly terminated", not
// why), a plain URI for a member that requires TLS, credentials named in the URI. Other failures
// are returned as they are.
Status ExplainConnectFailure(Status status, std::string_view uri);

}  // namespace dst::member
