#include "aggregator/member_tls_options.h"

#include <cstdint>

#include <CLI/CLI.hpp>

namespace dst::aggregator {

void AddMemberTlsOptions(CLI::App& command, member::MemberTls* tls) {
  command.add_option("--member-tls-psk", tls->psk_file,
                     "TLS members: file of pre-shared keys (identity:hexkey lines, as psktool "
                     "writes them)");
  command.add_option("--member-tls-username", tls->username,
                     "TLS members: the identity to use from --member-tls-psk (default: the "
                     "login name)");
  command.add_option("--member-tls-certificates", tls->certificates_dir,
                     "TLS members: X.509 directory with ca-cert.pem (and client-cert.pem, "
                     "client-key.pem)");
  // Unset unless given, so that libnbd's default stands (and a config file may override it).
  command.add_flag_function(
      "--member-tls-verify-peer,!--no-member-tls-verify-peer",
      [tls](std::int64_t count) { tls->verify_peer = count > 0; },
      "TLS members over TCP with X.509: check the member's certificate against its host name "
      "(default: yes)");
}

}  // namespace dst::aggregator
