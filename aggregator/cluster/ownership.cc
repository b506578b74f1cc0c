#include "aggregator/cluster/ownership.h"

#include <unistd.h>

#include <chrono>
#include <map>
#include <mutex>
#include <thread>

#include <CLI/CLI.hpp>

#include "aggregator/cluster/catalog_client.h"
#include "aggregator/cluster/lease_renewer.h"
#include "aggregator/cluster/owner_endpoint.h"
#include "aggregator/command_error.h"
#include "aggregator/control/runtime.h"
#include "aggregator/serve_command.h"
#include "common/log.h"

namespace dst::aggregator {

namespace {

using cluster::CatalogClient;
using cluster::OwnerRecord;
using Clock = std::chrono::steady_clock;

// How often a --takeover looks whether the owner's key is gone.
constexpr auto kTakeoverPoll = std::chrono::milliseconds(200);
// What a --takeover waits beyond the owner's lease TTL before it gives up.
constexpr auto kTakeoverSlack = std::chrono::seconds(5);

std::string HostName() {
  char name[256] = {};
  if (gethostname(name, sizeof(name) - 1) != 0) return "unknown-host";
  return name;
}

Status HolderOf(const cluster::KeyValue& kv, OwnerRecord* owner) {
  return cluster::DecodeOwner(kv.key, kv.value, owner);
}

// Takes the owner key of `volume` for `lease`; with `takeover`, waits for a holder's lease to
// expire first.
Status TakeLock(CatalogClient& catalog, const std::string& volume, const OwnerRecord& me,
                bool takeover, int64_t* revision) {
  const std::string key = catalog.keys().Owner(volume);
  std::optional<Clock::time_point> deadline;
  for (;;) {
    cluster::CreateResult result;
    DST_RETURN_IF_ERROR(catalog.Run(
        catalog.etcd().CreateIfAbsent(key, cluster::EncodeOwner(me), me.lease, &result)));
    if (result.created) {
      *revision = result.current.create_revision;
      LOG_INFO("volume %s: cluster owner %s, lease %lld, lock revision %lld", volume.c_str(),
               cluster::DescribeOwner(me).c_str(), static_cast<long long>(me.lease),
               static_cast<long long>(result.current.create_revision));
      return Status::Ok();
    }
    OwnerRecord holder;
    DST_RETURN_IF_ERROR(HolderOf(result.current, &holder));
    if (!takeover)
      return Status::Error(EBUSY, "volume " + volume + " is owned by " +
                                      cluster::DescribeOwner(holder) +
                                      ": not serving it (serve --takeover takes it over once "
                                      "the owner's lease has expired)");
    if (!deadline) {
      cluster::LeaseTtl ttl;
      Status s = catalog.Run(catalog.etcd().LeaseTimeToLive(result.current.lease, &ttl));
      const auto granted = std::chrono::seconds(s.ok() ? ttl.granted_ttl : 0);
      deadline = Clock::now() + granted + kTakeoverSlack;
      LOG_INFO(
          "volume %s: owned by %s: waiting up to %lld s for its lease to expire", volume.c_str(),
          cluster::DescribeOwner(holder).c_str(),
          static_cast<long long>(
              std::chrono::duration_cast<std::chrono::seconds>(granted + kTakeoverSlack).count()));
    }
    // Until the key is gone (its lease expired or was revoked), or the deadline.
    for (;;) {
      if (Clock::now() >= *deadline)
        return Status::Error(EBUSY, "volume " + volume + " is still owned by " +
                                        cluster::DescribeOwner(holder) +
                                        ": its lease is being renewed (is it alive?)");
      std::this_thread::sleep_for(kTakeoverPoll);
      int64_t ours = 0;  // our own lease lives on while we wait
      DST_RETURN_IF_ERROR(catalog.Run(catalog.etcd().KeepAliveOnce(me.lease, &ours)));
      std::optional<cluster::KeyValue> kv;
      DST_RETURN_IF_ERROR(catalog.Run(catalog.etcd().Get(key, &kv)));
      if (!kv) break;
    }
  }
}

// Renews the lease (a LeaseRenewer), from before the volumes are assembled (which blocks the
// serving thread) until serve stops; when the lease is lost, stops the attached volumes' writes
// on the serving event loop.
class LeaseKeeper {
 public:
  LeaseKeeper(int64_t lease, std::chrono::seconds ttl) : lease_(lease), ttl_(ttl) {}
  ~LeaseKeeper() { Stop(); }

  // `renewed`: when the last renewal that succeeded was sent.
  Status Start(const cluster::EtcdUrl& url, const cluster::EtcdTls& tls,
               std::chrono::milliseconds timeout, Clock::time_point renewed) {
    cluster::EtcdClientOptions options;
    DST_RETURN_IF_ERROR(cluster::EtcdOptionsFor(url, tls, timeout, &options));
    cluster::LeaseWatch watch;
    watch.lost = [this](const std::string& why) { Lose(why); };
    watch.renewed = renewed;
    watch.failing_note = " (writes stop if it stays so)";
    return renewer_.Start(std::move(options), lease_, ttl_, std::move(watch));
  }

  // From here on a lost lease stops these volumes of `server` (at once if it is lost already).
  void Attach(control::Server* server, std::vector<std::string> names) {
    std::lock_guard lock(mu_);
    server_ = server;
    names_ = std::move(names);
    if (lost_) StopWritesLocked();
  }
  void Detach() {
    std::lock_guard lock(mu_);
    server_ = nullptr;
  }

  void Stop() { renewer_.Stop(); }

 private:
  // On the renewer's thread, once.
  void Lose(const std::string& why) {
    std::lock_guard lock(mu_);
    lost_ = true;
    why_ = "cluster lease " + std::to_string(lease_) + " lost (" + why + ")";
    if (server_ == nullptr)
      LOG_ERROR("%s: writes stop once the volumes are open", why_.c_str());
    else
      StopWritesLocked();
  }

  // On the serving event loop: the volumes belong to it. A handler still queued when that loop
  // is destroyed is destroyed unrun.
  void StopWritesLocked() {
    asio::post(server_->io, [server = server_, names = names_, why = why_] {
      for (integrity::ChecksummedVolume* v : server->checksummed)
        for (const std::string& name : names)
          if (v->name() == name) v->StopWrites(why);
    });
  }

  const int64_t lease_;
  const std::chrono::seconds ttl_;

  std::mutex mu_;
  bool lost_ = false;
  std::string why_;
  control::Server* server_ = nullptr;
  std::vector<std::string> names_;
  // Last: its thread, which calls Lose, ends before the members above are destroyed.
  cluster::LeaseRenewer renewer_;
};

// The volumes' records as read, by name (their mod_revision), to check them again once their
// locks are held.
using ReadRevisions = std::map<std::string, int64_t>;

Status ConfigFromCatalog(CatalogClient& catalog, const ServeArgs& args, ServeConfig* config,
                         ReadRevisions* revisions) {
  if (!args.config_file.empty())
    return Status::Invalid("--cluster cannot be combined with --config");
  if (args.members.empty()) return Status::Invalid("serve --cluster needs the volume names");
  ServeArgs no_members = args;
  no_members.members.clear();
  DST_RETURN_IF_ERROR(ServeConfigFromArgs(no_members, config));
  const VolumeConfig common = config->volumes.front();
  config->volumes.clear();
  for (const std::string& name : args.members) {
    cluster::Revisioned<cluster::VolumeRecord> v;
    DST_RETURN_IF_ERROR(catalog.GetVolume(name, &v));
    if (v.record.state != "ready")
      return Status::Error(EAGAIN,
                           "volume " + name + " is being created (state " + v.record.state + ")");
    (*revisions)[name] = v.mod_revision;
    VolumeConfig volume = common;
    volume.name = name;
    volume.members = v.record.members;
    config->volumes.push_back(std::move(volume));
  }
  return Status::Ok();
}

// Under its lock, the volume's record is still the one its members came from: a volume removed
// from the catalog (or removed and created again) between the read and the lock is not served.
Status CheckUnchanged(CatalogClient& catalog, const std::string& name, int64_t read) {
  cluster::Revisioned<cluster::VolumeRecord> v;
  DST_RETURN_IF_ERROR(catalog.GetVolume(name, &v));
  if (v.mod_revision != read)
    return Status::Error(ESTALE, "volume " + name +
                                     " changed in the catalog while serve took its lock: run "
                                     "serve again");
  return Status::Ok();
}

}  // namespace

void AddClusterServeOptions(CLI::App& serve, ClusterServeArgs* args) {
  cluster::AddClusterOptions(serve, &args->cluster,
                             "serve the catalog volumes named instead of member URIs, each under "
                             "a lease-backed lock");
  serve.add_flag("--takeover", args->takeover,
                 "--cluster: wait for an owner's lease to expire, then take the volume over");
  serve.add_option("--lease-ttl", args->lease_ttl, "--cluster: the lock's lease, in seconds")
      ->check(CLI::Range(2u, 3600u))
      ->capture_default_str();
  serve.add_option("--advertise", args->advertise,
                   "--cluster: the HOST:PORT where NBD clients (map --cluster) reach this "
                   "aggregator (default: the first --listen address, a wildcard one under this "
                   "host's name)");
}

int RunClusterServe(const ServeArgs& args, const ClusterServeArgs& cluster) {
  if (args.verbose) SetLogLevel(LogLevel::kDebug);
  std::unique_ptr<CatalogClient> catalog;
  // A renewal that hangs must not outlive its turn.
  const auto timeout = std::chrono::milliseconds(cluster.lease_ttl * 1000 / 3);
  if (Status s = cluster::OpenCatalog(cluster.cluster, &catalog, timeout); !s.ok())
    return ExitWithError(s);
  ServeConfig config;
  ReadRevisions revisions;
  if (Status s = ConfigFromCatalog(*catalog, args, &config, &revisions); !s.ok())
    return ExitWithError(s);
  std::string nbd;
  if (Status s = cluster::AdvertisedNbdAddress(cluster.advertise, config.listen, HostName(), &nbd);
      !s.ok())
    return ExitWithError(s);

  cluster::Lease lease;
  if (Status s =
          catalog->Run(catalog->etcd().GrantLease(std::chrono::seconds(cluster.lease_ttl), &lease));
      !s.ok())
    return ExitWithError(s.Wrap("cluster lease"));
  const OwnerRecord me{HostName(), static_cast<int64_t>(getpid()), cluster::SecondsSinceEpoch(),
                       lease.id, nbd};
  auto revoke = [&catalog, &lease] {
    const Status s = catalog->Run(catalog->etcd().RevokeLease(lease.id));
    if (!s.ok())
      LOG_WARNING("cluster: lease %lld not revoked: %s", static_cast<long long>(lease.id),
                  s.message().c_str());
  };
  for (VolumeConfig& v : config.volumes) {
    int64_t revision = 0;
    Status s = TakeLock(*catalog, v.name, me, cluster.takeover, &revision);
    if (s.ok()) s = CheckUnchanged(*catalog, v.name, revisions.at(v.name));
    if (!s.ok()) {
      revoke();
      return ExitWithError(s);
    }
    v.min_ownership_epoch = static_cast<uint64_t>(revision);
  }
  // A takeover may have waited long: renew once, then keep renewing while the volumes are
  // assembled and served.
  const Clock::time_point sent = Clock::now();
  int64_t ttl = 0;
  if (Status s = catalog->Run(catalog->etcd().KeepAliveOnce(lease.id, &ttl)); !s.ok()) {
    revoke();
    return ExitWithError(s.Wrap("cluster lease"));
  }
  LeaseKeeper keeper(lease.id, std::chrono::seconds(ttl));
  if (Status s = keeper.Start(catalog->url(), cluster.cluster.tls, timeout, sent); !s.ok()) {
    revoke();
    return ExitWithError(s);
  }
  std::vector<std::string> names;
  for (const VolumeConfig& v : config.volumes)
    names.push_back(v.name);
  ServeHooks hooks;
  hooks.serving = [&keeper, names](control::Server& server) -> std::shared_ptr<void> {
    keeper.Attach(&server, names);
    return std::shared_ptr<void>(nullptr, [&keeper](void*) { keeper.Detach(); });
  };
  const int code = Serve(std::move(config), args, std::move(hooks));
  keeper.Stop();
  revoke();
  return code;
}

}  // namespace dst::aggregator
