// The control socket's key commands for encrypted volumes (docs/encryption.md, "Key slots"):
//   key list VOLUME                      one line per key slot in use: "slot 0: passphrase
//                                        (scrypt 2^17, 8, 1)"
//   key add VOLUME key-file|passphrase-file PATH [COST]
//                                        PATH absolute, read by the aggregator; COST: scrypt's
//                                        log2 N for a passphrase (default 17)
//   key remove VOLUME SLOT               refused for the last slot in use
// add and remove answer "ok: ..." once every member's superblock holds the change, or
// "error: ..." with the reason.
//
// Threading: the event loop's thread (the control socket's handler runs there).
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "aggregator/control/runtime.h"

namespace dst::control {

// Whether words[0] is "key".
bool IsKeyCommand(const std::vector<std::string>& words);
// `answer` hears the answer once: at once for list and refusals, later for add and remove.
void AnswerKeyCommand(Server& server, const std::vector<std::string>& words,
                      std::function<void(std::string)> answer);

}  // namespace dst::control
