// The --member-tls-* options, the same for serve, create and inspect: how the aggregator
// authenticates to TLS members (nbds://, nbds+unix://). See member/member_tls.h for what they
// mean and docs/security.md for how to set them up. They are serve's options, defined in its
// table (serve_options.h), whose config file has the same keys without the dashes.
#pragma once

#include "aggregator/member/member_tls.h"

namespace CLI {
class App;
}  // namespace CLI

namespace dst::aggregator {

// Adds --member-tls-psk FILE, --member-tls-username NAME, --member-tls-certificates DIR and
// --member-tls-verify-peer / --no-member-tls-verify-peer to `command`, storing what is given in
// *tls (which must outlive the parse). Nothing is checked here: CheckMemberTls does that, with
// the member URIs.
void AddMemberTlsOptions(CLI::App& command, member::MemberTls* tls);

}  // namespace dst::aggregator
