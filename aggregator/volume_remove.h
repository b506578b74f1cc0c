// `volume remove NAME [force]` in a running `serve` (docs/operations.md, "Volume commands"): a
// volume leaves while the others go on serving.
//
// The steps, each refusal answered before anything changed:
//   1. refused: an unknown volume, one already being removed, one with clients connected unless
//      `force` (the error names them), a mirror or raid10 volume while a member add or replace
//      (MemberAdder) or a member's return (ReturnWatcher) is under way for it;
//   2. the export is withdrawn (ExportRegistry::Withdraw): a new client asking for it gets the
//      error of an unknown export; `member add` and returns no longer see the volume;
//   3. with `force`, its connections end (VolumeClient::EndService): requests in flight complete,
//      later ones get ESHUTDOWN, then each connection closes;
//   4. the volume is closed: a checksummed one with ChecksummedVolume::Close (background jobs
//      stopped, checksums written back, the superblocks marked clean), a raw one flushed;
//   5. its members are released (NbdMember::Abandon: connections closed) and it leaves
//      Server::volumes, checksummed, member_refs and members and the registry; the member and
//      the volume objects themselves are kept until the server ends (Server::retired_*).
// `done` hears OK after step 5, or the refusal; a volume that could not be closed clean is
// removed all the same, and `done` hears why (the next start recomputes what was dirty).
//
// Threading: the event loop's thread.
#pragma once

#include <functional>
#include <string>

#include "aggregator/control/runtime.h"
#include "common/status.h"

namespace dst::aggregator {

void RemoveVolume(control::Server& server, const std::string& name, bool force,
                  std::function<void(Status)> done);

}  // namespace dst::aggregator
