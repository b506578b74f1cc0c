#include "aggregator/cluster/catalog.h"

#include <chrono>

#include <nlohmann/json.hpp>

namespace dst::cluster {

namespace {

using nlohmann::json;

// Runs `read` on the parsed object; any JSON or type error becomes EINVAL naming the key.
template <typename Read>
Status Decode(std::string_view key, std::string_view text, const char* what, Read read) {
  try {
    const json j = json::parse(text);
    if (!j.is_object()) throw std::runtime_error("not a JSON object");
    read(j);
    return Status::Ok();
  } catch (const std::exception& e) {
    return Status::Invalid("catalog key " + std::string(key) + ": not " + what + " record (" +
                           e.what() + ")");
  }
}

template <typename T>
void Optional(const json& j, const char* field, T* out) {
  if (j.contains(field) && !j.at(field).is_null()) *out = j.at(field).get<T>();
}

}  // namespace

std::string EncodeExport(const ExportRecord& r) {
  json j = {{"uri", r.uri}, {"zone", r.zone}, {"size", r.size}, {"drained", r.drained}};
  j["volume"] = r.volume.empty() ? json(nullptr) : json(r.volume);
  return j.dump();
}

std::string EncodeVolume(const VolumeRecord& r) {
  return json({{"name", r.name},
               {"uuid", r.uuid},
               {"layout", r.layout},
               {"copies", r.copies},
               {"size", r.size},
               {"members", r.members},
               {"state", r.state},
               {"created", r.created},
               {"creator_lease", r.creator_lease}})
      .dump();
}

std::string EncodeOwner(const OwnerRecord& r) {
  json j = {{"host", r.host}, {"pid", r.pid}, {"since", r.since}, {"lease", r.lease}};
  j["nbd"] = r.nbd.empty() ? json(nullptr) : json(r.nbd);
  return j.dump();
}

Status DecodeExport(std::string_view key, std::string_view text, ExportRecord* r) {
  return Decode(key, text, "an export", [r](const json& j) {
    *r = {};
    r->uri = j.at("uri").get<std::string>();
    r->zone = j.at("zone").get<std::string>();
    r->size = j.at("size").get<uint64_t>();
    Optional(j, "drained", &r->drained);
    Optional(j, "volume", &r->volume);
  });
}

Status DecodeVolume(std::string_view key, std::string_view text, VolumeRecord* r) {
  return Decode(key, text, "a volume", [r](const json& j) {
    *r = {};
    r->name = j.at("name").get<std::string>();
    r->members = j.at("members").get<std::vector<std::string>>();
    Optional(j, "uuid", &r->uuid);
    Optional(j, "layout", &r->layout);
    Optional(j, "copies", &r->copies);
    Optional(j, "size", &r->size);
    Optional(j, "state", &r->state);
    Optional(j, "created", &r->created);
    Optional(j, "creator_lease", &r->creator_lease);
  });
}

Status DecodeOwner(std::string_view key, std::string_view text, OwnerRecord* r) {
  return Decode(key, text, "an owner", [r](const json& j) {
    *r = {};
    r->host = j.at("host").get<std::string>();
    Optional(j, "pid", &r->pid);
    Optional(j, "since", &r->since);
    Optional(j, "lease", &r->lease);
    Optional(j, "nbd", &r->nbd);
  });
}

std::string DescribeOwner(const OwnerRecord& owner) {
  return owner.host + " (pid " + std::to_string(owner.pid) + ")";
}

uint64_t SecondsSinceEpoch() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::seconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count());
}

}  // namespace dst::cluster
