#include "aggregator/cluster/owner_endpoint.h"

#include <cerrno>

namespace dst::cluster {

Status CheckOwnerEndpoint(const std::string& name, const std::string& url,
                          const std::optional<VolumeRecord>& volume,
                          const std::optional<OwnerRecord>& owner) {
  if (!volume) return Status::Error(ENOENT, "volume " + name + " is not in the catalog at " + url);
  if (volume->state != "ready")
    return Status::Error(EAGAIN, "volume " + name + " is being created (state " + volume->state +
                                     "): not served yet");
  if (!owner)
    return Status::Error(ENOENT, "volume " + name +
                                     " has no owner now: no serve --cluster holds it (start one, "
                                     "or wait for a --takeover)");
  if (owner->nbd.empty())
    return Status::Error(EADDRNOTAVAIL,
                         "volume " + name + " is owned by " + DescribeOwner(*owner) +
                             ", which advertises no NBD address (its serve --cluster has neither "
                             "a TCP --listen nor --advertise)");
  return Status::Ok();
}

namespace {

// Splits HOST:PORT or [V6]:PORT; false when it is neither or the port is not 1 to 65535.
bool SplitHostPort(const std::string& text, std::string* host, std::string* port) {
  const size_t colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0) return false;
  *host = text.substr(0, colon);
  *port = text.substr(colon + 1);
  if (host->front() == '[') {
    if (host->size() < 3 || host->back() != ']') return false;
  } else if (host->find_first_of(":[]") != std::string::npos) {
    return false;
  }
  if (port->empty() || port->size() > 5 ||
      port->find_first_not_of("0123456789") != std::string::npos)
    return false;
  const int number = std::stoi(*port);
  return number >= 1 && number <= 65535;
}

}  // namespace

Status AdvertisedNbdAddress(const std::string& advertise, const std::vector<std::string>& listen,
                            const std::string& host_name, std::string* out) {
  std::string host;
  std::string port;
  if (!advertise.empty()) {
    if (!SplitHostPort(advertise, &host, &port) ||
        advertise.find_first_of(" \t\n/") != std::string::npos)
      return Status::Invalid("--advertise " + advertise + ": expected HOST:PORT or [V6]:PORT");
    *out = advertise;
    return Status::Ok();
  }
  out->clear();
  if (listen.empty() || !SplitHostPort(listen.front(), &host, &port)) return Status::Ok();
  const bool wildcard = host == "0.0.0.0" || host == "[::]" || host == "[0:0:0:0:0:0:0:0]";
  *out = (wildcard ? host_name : host) + ":" + port;
  return Status::Ok();
}

Status LookupOwnerEndpoint(CatalogClient& catalog, const std::string& name, OwnerRecord* owner) {
  std::optional<KeyValue> volume_kv;
  std::optional<KeyValue> owner_kv;
  DST_RETURN_IF_ERROR(catalog.Run(catalog.etcd().Get(catalog.keys().Volume(name), &volume_kv)));
  DST_RETURN_IF_ERROR(catalog.Run(catalog.etcd().Get(catalog.keys().Owner(name), &owner_kv)));
  std::optional<VolumeRecord> volume;
  if (volume_kv)
    DST_RETURN_IF_ERROR(DecodeVolume(volume_kv->key, volume_kv->value, &volume.emplace()));
  std::optional<OwnerRecord> holder;
  if (owner_kv) DST_RETURN_IF_ERROR(DecodeOwner(owner_kv->key, owner_kv->value, &holder.emplace()));
  DST_RETURN_IF_ERROR(CheckOwnerEndpoint(name, catalog.url().ToString(), volume, holder));
  *owner = *holder;
  return Status::Ok();
}

}  // namespace dst::cluster
