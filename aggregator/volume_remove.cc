#include "aggregator/volume_remove.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>

#include "aggregator/loop_volumes.h"
#include "aggregator/member_add.h"
#include "aggregator/member_return.h"
#include "aggregator/stagelog/staged_device.h"
#include "common/join.h"
#include "common/log.h"

namespace dst::aggregator {

namespace {

using control::Server;

// At most this many clients are named in a refusal.
constexpr size_t kClientsNamed = 8;

// "2 client(s) connected: 10.0.0.7:40112, unix".
std::string Clients(const server::VolumeTraffic& traffic) {
  std::string text = std::to_string(traffic.connected.size()) + " client(s) connected: ";
  size_t named = 0;
  for (const server::VolumeClient* client : traffic.connected) {
    if (named == kClientsNamed) {
      text += ", ...";
      break;
    }
    text += (named++ ? ", " : "") + client->peer();
  }
  return text;
}

// Where `volume` is in Server::volumes now (another removal may have moved it).
size_t IndexOf(const Server& server, const volume::BlockDevice* volume) {
  for (size_t i = 0; i < server.volumes.size(); ++i)
    if (server.volumes[i].get() == volume) return i;
  return server.volumes.size();
}

// Abandons the members of the volume at `index` and moves them to Server::retired_members; their
// refs leave Server::member_refs, and those of the volumes after it move down one place.
void ReleaseMembers(Server& server, size_t index, const std::string& name) {
  for (const control::MemberRef& ref : server.member_refs) {
    if (ref.volume_index != index) continue;
    const auto owned = std::find_if(server.members.begin(), server.members.end(),
                                    [&](const auto& m) { return m.get() == ref.member; });
    if (owned == server.members.end()) continue;
    (*owned)->OnSuperseded(nullptr);  // it named the volume
    (*owned)->Abandon("volume " + name + " removed");
    server.retired_members.push_back(std::move(*owned));
    server.members.erase(owned);
  }
  std::erase_if(server.member_refs,
                [index](const control::MemberRef& ref) { return ref.volume_index == index; });
  for (control::MemberRef& ref : server.member_refs)
    if (ref.volume_index > index) --ref.volume_index;
}

// The volume is closed (err: how that went): everything lets go of it.
void Forget(Server& server, volume::BlockDevice* volume, int err,
            const std::function<void(Status)>& done) {
  const std::string name = volume->name();
  const size_t index = IndexOf(server, volume);
  if (index == server.volumes.size()) return done(Status::Ok());  // already forgotten
  ReleaseMembers(server, index, name);
  if (server.loop_volumes) server.loop_volumes->Forget(volume);
  std::erase(server.checksummed, volume);
  server.registry.Remove(volume);
  if (server.returns) server.returns->VolumeRemoved(index);
  if (server.adder) server.adder->VolumeRemoved(index);
  server.retired_volumes.push_back(std::move(server.volumes[index]));
  server.volumes.erase(server.volumes.begin() + static_cast<std::ptrdiff_t>(index));
  if (err != 0) {
    LOG_ERROR("volume %s: removed, but not closed clean: %s", name.c_str(), std::strerror(err));
    return done(Status::Error(err, "volume " + name +
                                       " removed, but not closed clean (the next start "
                                       "recomputes what was dirty): " +
                                       std::strerror(err)));
  }
  LOG_INFO("volume %s: removed", name.c_str());
  done(Status::Ok());
}

// Refusals for a mirror or raid10 volume whose members are changing; otherwise lets the member
// adder and the return watcher forget it.
Status LetGoOfSlots(Server& server, const integrity::ChecksummedVolume* volume) {
  if (server.returns) DST_RETURN_IF_ERROR(server.returns->Busy(volume));
  if (server.adder) DST_RETURN_IF_ERROR(server.adder->ForgetVolume(volume));
  if (server.returns) server.returns->ForgetVolume(volume);
  return Status::Ok();
}

}  // namespace

void RemoveVolume(Server& server, const std::string& name, bool force,
                  std::function<void(Status)> done) {
  const size_t index = std::find_if(server.volumes.begin(), server.volumes.end(),
                                    [&](const auto& v) { return v->name() == name; }) -
                       server.volumes.begin();
  if (index == server.volumes.size())
    return done(Status::Error(ENOENT, "unknown volume '" + name + "'"));
  volume::BlockDevice* volume = server.volumes[index].get();
  // Its log holds writes the members may not have yet, and is opened at start only.
  if (dynamic_cast<stagelog::StagedDevice*>(volume) != nullptr)
    return done(Status::Error(EBUSY, "volume " + name +
                                         " is served through a staging log: it is removed by a "
                                         "restart without it"));
  if (server.registry.Withdrawn(volume))
    return done(Status::Error(EBUSY, "volume " + name + " is already being removed"));
  server::VolumeTraffic& traffic = server.registry.TrafficOf(volume);
  if (!traffic.connected.empty() && !force)
    return done(Status::Error(
        EBUSY, "volume " + name + " has " + Clients(traffic) + "; --force ends them"));
  const auto checksummed = std::find(server.checksummed.begin(), server.checksummed.end(), volume);
  integrity::ChecksummedVolume* closing =
      checksummed == server.checksummed.end() ? nullptr : *checksummed;
  if (closing)
    if (Status s = LetGoOfSlots(server, closing); !s.ok()) return done(std::move(s));
  server.registry.Withdraw(volume);
  LOG_INFO("volume %s: removing; ending %zu client(s)", name.c_str(), traffic.connected.size());
  auto close = [&server, volume, closing, done = std::move(done)](int) mutable {
    // Posted: the close ends inside a member's completion, and the members are abandoned next.
    auto closed = [&server, volume, done = std::move(done)](int err) {
      asio::post(server.io, [&server, volume, err, done] { Forget(server, volume, err, done); });
    };
    if (closing)
      closing->Close(std::move(closed));
    else
      volume->Flush(std::move(closed));
  };
  auto join = MakeJoin(std::move(close));
  const std::vector<server::VolumeClient*> clients(traffic.connected.begin(),
                                                   traffic.connected.end());
  for (server::VolumeClient* client : clients)
    client->EndService([part = Part(join)] { part(0); });
  join->Arrive(0);
}

}  // namespace dst::aggregator
