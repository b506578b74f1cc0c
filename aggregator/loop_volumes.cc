#include "aggregator/loop_volumes.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <utility>

#include "aggregator/control/runtime.h"
#include "aggregator/member/nbd_member.h"
#include "common/log.h"

namespace dst::aggregator {

namespace {

// How long a copy's members get to connect, as the home loop's do at start.
constexpr std::chrono::seconds kCopyConnectTimeout{15};

}  // namespace

// One loop's copy of one volume. The home loop owns the record and reads `forgotten` and
// `serving`; the members and the volume are touched on `loop` only, until the loops are stopped.
struct LoopVolumes::Copy {
  const volume::Volume* of = nullptr;  // the home loop's volume
  size_t loop = 0;
  asio::io_context* io = nullptr;
  VolumeConfig config;
  std::vector<std::unique_ptr<member::NbdMember>> members;
  std::unique_ptr<volume::Volume> volume;
  std::shared_ptr<volume::MergeGate> gate;  // the volume's, shared by its copies; or nullptr
  bool forgotten = false;                   // home: the volume was removed
  bool serving = false;                     // home: connections of the loop use it
};

LoopVolumes::LoopVolumes(control::Server& server, Settings settings)
    : server_(server), settings_(std::move(settings)) {}

LoopVolumes::~LoopVolumes() = default;

bool LoopVolumes::Copyable(const volume::Volume& volume, std::string* why) {
  for (const volume::MemberTarget* m : volume.members())
    if (!m->capabilities().can_multi_conn) {
      *why = "member " + m->name() + " does not allow multi-conn";
      return false;
    }
  return true;
}

void LoopVolumes::Replicate(volume::Volume& volume, const VolumeConfig& v) {
  std::string why;
  if (!Copyable(volume, &why)) {
    LOG_INFO("volume %s: served from the home loop only: %s", volume.name().c_str(), why.c_str());
    return;
  }
  std::shared_ptr<volume::MergeGate> gate;
  if (volume.capabilities().min_block > 1) {
    gate = std::make_shared<volume::MergeGate>(server_.loops->size());
    volume.SetFirstMergeBarrier([this, gate, name = volume.name()](std::function<void()> done) {
      gate->Close();
      LOG_INFO(
          "volume %s: an unaligned write is merged: every loop writes through the home "
          "loop from now on",
          name.c_str());
      AwaitDrained(gate, std::move(done));
    });
  }
  for (size_t loop = 1; loop < server_.loops->size(); ++loop) {
    auto copy = std::make_unique<Copy>();
    copy->of = &volume;
    copy->loop = loop;
    copy->io = &server_.loops->Context(loop);
    copy->config = v;
    copy->gate = gate;
    Copy& c = *copy;
    copies_.push_back(std::move(copy));
    asio::post(*c.io, [this, &c] { Build(c); });
  }
}

void LoopVolumes::Build(Copy& c) {
  // The members' answers and the deadline race; the first to end the wait wins.
  struct Pending {
    size_t members;
    Status first_error;
    bool ended = false;
    asio::steady_timer deadline;
  };
  auto pending = std::make_shared<Pending>(
      Pending{c.config.members.size(), Status::Ok(), false, asio::steady_timer(*c.io)});
  for (const std::string& uri : c.config.members) {
    c.members.push_back(std::make_unique<member::NbdMember>(*c.io, uri, settings_.connections,
                                                            settings_.transactions, settings_.tls));
    c.members.back()->SetLogName(uri + " (loop " + std::to_string(c.loop) + ")");
  }
  for (auto& m : c.members)
    m->AsyncConnect([this, &c, pending, uri = m->name()](Status s) {
      if (!s.ok() && pending->first_error.ok())
        pending->first_error = Status::Error(s.err(), "member " + uri + ": " + s.message());
      if (--pending->members > 0 || pending->ended) return;
      pending->ended = true;
      pending->deadline.cancel();
      Connected(c, pending->first_error);
    });
  // A member server that takes no more connections (qemu-nbd --shared) leaves one waiting for
  // its handshake: the copy is given up, which closes them.
  pending->deadline.expires_after(kCopyConnectTimeout);
  pending->deadline.async_wait([this, &c, pending](const asio::error_code& ec) {
    if (ec || pending->ended) return;
    pending->ended = true;
    Connected(c, Status::Error(ETIMEDOUT, "members not connected within " +
                                              std::to_string(kCopyConnectTimeout.count()) + " s"));
  });
}

void LoopVolumes::Connected(Copy& c, const Status& first_error) {
  Status status = first_error;
  if (status.ok())
    for (const auto& m : c.members)
      if (m->state() != member::NbdMember::State::kReady)  // failed since it connected
        status = Status::Error(
            EIO, "member " + m->name() + " is " + std::string(member::MemberStateName(m->state())));
  if (status.ok()) {
    std::vector<volume::MemberTarget*> targets;
    for (auto& m : c.members)
      targets.push_back(m.get());
    status = volume::Volume::Create(c.config.name, c.config.description, c.config.layout,
                                    c.config.chunk_size, targets, &c.volume);
  }
  // The members may have changed since the home loop's connected (a member resized): a copy of
  // another size, or with other capabilities, is not the same volume.
  if (status.ok() && (c.volume->size() != c.of->size() ||
                      c.volume->capabilities().read_only != c.of->capabilities().read_only))
    status = Status::Error(EIO, "its members no longer make the volume the home loop serves");
  asio::post(server_.io, [this, &c, status] { Built(c, status); });
}

void LoopVolumes::Built(Copy& c, const Status& status) {
  const std::string& name = c.config.name;
  if (c.forgotten) return Abandon(c, "volume " + name + " removed");
  if (!status.ok()) {
    LOG_WARNING(
        "volume %s: loop %zu: no connections of its own (%s): its clients go through "
        "the home loop",
        name.c_str(), c.loop, status.message().c_str());
    return Abandon(c, "loop " + std::to_string(c.loop) + "'s copy of volume " + name + " given up");
  }
  server_.registry.SetOnLoop(c.of, c.loop, {c.volume.get(), c.gate.get()});
  c.serving = true;
  for (size_t i = 0; i < c.members.size(); ++i)
    for (control::MemberRef& ref : server_.member_refs)
      if (static_cast<const volume::MemberTarget*>(ref.member) == c.of->members()[i])
        ref.loop_copies.push_back(c.members[i].get());
  LOG_INFO("volume %s: loop %zu has its own connections to its %zu member(s)", name.c_str(), c.loop,
           c.members.size());
}

void LoopVolumes::AwaitDrained(std::shared_ptr<volume::MergeGate> gate,
                               std::function<void()> done) {
  if (gate->Drained()) return done();
  // Rare (once per volume at most) and short (a write's round trip): polled.
  auto timer = std::make_shared<asio::steady_timer>(server_.io, std::chrono::milliseconds(1));
  timer->async_wait([this, timer, gate = std::move(gate),
                     done = std::move(done)](const asio::error_code&) mutable {
    AwaitDrained(std::move(gate), std::move(done));
  });
}

void LoopVolumes::Forget(const volume::BlockDevice* volume) {
  for (auto& copy : copies_) {
    if (copy->of != volume || copy->forgotten) continue;
    copy->forgotten = true;
    // A copy still being built is abandoned once built.
    if (copy->serving) Abandon(*copy, "volume " + copy->config.name + " removed");
  }
}

void LoopVolumes::Abandon(Copy& c, const std::string& why) {
  c.serving = false;
  asio::post(*c.io, [&c, why] {
    for (auto& m : c.members)
      m->Abandon(why);
  });
}

}  // namespace dst::aggregator
