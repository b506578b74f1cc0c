// The control socket's commands that act on a running server (docs/operations.md, "Control
// commands"), next to `status`:
//   scrub VOLUME start [check|repair]      (no mode: repair with copies, check without)
//   scrub VOLUME pause|resume|stop
//   resync-rate VOLUME MIN MAX             (bytes per second, or sizes such as 1M)
//   member fail|remove VOLUME SLOT         (mirror and raid10)
//   member set VOLUME SLOT write-mostly|readwrite
//   member add VOLUME URI [SLOT]           (mirror and raid10; answered once the rebuild started)
// Each answers one line: "ok: ..." once the command took effect, or "error: ..." with the
// reason (unknown volume, not a checksummed volume, no scrub under way, bad number, no such
// slot, a slot in the wrong state, the last current copy, usage).
// What a command changes reaches the superblocks after the answer (the volume's next update).
//
// Threading: the event loop's thread (the control socket's handler runs there).
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "aggregator/control/runtime.h"

namespace dst::control {

// `words`: the request split at spaces; words[0] is "scrub", "resync-rate" or "member". `answer`
// hears the answer once: at once, except for member add (Server::add_member), whose answer comes
// after the new export is formatted and its rebuild started.
void AnswerCommand(Server& server, const std::vector<std::string>& words,
                   std::function<void(std::string)> answer);
// Whether words[0] names one of these commands.
bool IsActingCommand(const std::vector<std::string>& words);

// Answers' shapes: "error: WHY\n", and "ok: OK\n" or the error of `s`.
std::string Error(const std::string& why);
std::string Answer(const Status& s, const std::string& ok);
// The checksummed volume named `name`, or nullptr and the error line that answers the command
// (unknown, raw, or being removed).
integrity::ChecksummedVolume* FindVolume(Server& server, const std::string& name,
                                         std::string* error);

}  // namespace dst::control
