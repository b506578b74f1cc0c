// nbdkit-dst-plugin: the dst export node. This is the only file that sees
// nbdkit's C API: each callback translates to the plain C++ of FileExport,
// PluginConfig, AccessPolicy and FenceTable, and a failed Status to
// nbdkit_error + nbdkit_set_error, so that the client gets the errno and the
// log the context.
//
// Threading: NBDKIT_THREAD_MODEL_SERIALIZE_REQUESTS by default (parallel with
// parallel-requests=true): connections run in parallel, the requests of one
// connection one at a time, on one thread.
// nbdkit before 1.33.10 (Debian 12 has 1.32.5) aborts under the parallel
// model when a client resets a connection with replies pending: a worker
// whose send failed shuts the socket down while another, already past its
// check of the connection's state, is about to send (fixed upstream by
// nbdkit commit 9d82aa4f). With one thread per connection no reply is ever
// sent concurrently, which closes that race whatever nbdkit flags the node
// runs with; docs/nbdkit-plugin.md has what it costs. Exports are created in
// .get_ready (single-threaded) and are immutable afterwards; the FenceTable
// is shared and thread-safe; a Connection belongs to one client connection.
#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include <sys/socket.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "nbdkit-plugin/access_rules.h"
#include "nbdkit-plugin/fence_table.h"
#include "nbdkit-plugin/file_export.h"
#include "nbdkit-plugin/plugin_config.h"

namespace {

using dst::Status;
using dst::plugin::AccessMode;
using dst::plugin::FencedName;
using dst::plugin::FenceTable;
using dst::plugin::FileExport;
using dst::plugin::MutationGuard;
using dst::plugin::Peer;

// Plugin-wide state: config and exports are written during configuration and
// read-only while serving; fences and hold_write_used are thread-safe.
struct PluginState {
  dst::plugin::PluginConfig config;
  std::vector<std::unique_ptr<FileExport>> exports;
  FenceTable fences;
  std::atomic<bool> hold_write_used{false};  // debug-hold-write fires once
};
PluginState* state = nullptr;

// Per-connection handle.
struct Connection {
  const FileExport* exp;
  bool readonly;
  // Fenced connections only: the membership of the fence session, and the
  // confirmation that .export_description returns instead of the configured
  // description.
  FenceTable::Ticket fence;
  std::string fence_confirmation;
};

int Fail(const Status& s) {
  nbdkit_error("%s", s.message().c_str());
  nbdkit_set_error(s.err());
  return -1;
}

int Check(const Status& s) {
  return s.ok() ? 0 : Fail(s);
}

const Connection* AsConnection(void* handle) {
  return static_cast<const Connection*>(handle);
}

Peer CurrentPeer() {
  sockaddr_storage addr{};
  socklen_t len = sizeof addr;
  if (nbdkit_peer_name(reinterpret_cast<sockaddr*>(&addr), &len) == -1) return Peer{};
  return Peer::FromSockaddr(reinterpret_cast<sockaddr*>(&addr), len);
}

const FileExport* FindExport(const std::string& name) {
  for (const auto& exp : state->exports)
    if (exp->spec().name == name) return exp.get();
  return nullptr;
}

// --- configuration --------------------------------------------------------

void dst_load() {
  state = new PluginState;
}

void dst_unload() {
  delete state;
  state = nullptr;
}

int dst_config(const char* key, const char* value) {
  return Check(state->config.Set(key, value));
}

int dst_config_complete() {
  return Check(state->config.Complete());
}

// Asked after the configuration: serialised unless parallel-requests=true.
int dst_thread_model() {
  return state->config.parallel_requests() ? NBDKIT_THREAD_MODEL_PARALLEL
                                           : NBDKIT_THREAD_MODEL_SERIALIZE_REQUESTS;
}

// Files are opened here rather than in .config_complete so that --dump-plugin
// and --help never create or touch them.
int dst_get_ready() {
  for (const auto& spec : state->config.exports()) {
    std::unique_ptr<FileExport> exp;
    Status s = FileExport::Open(spec, &exp);
    if (!s.ok()) return Fail(spec.origin.rfind("config=", 0) == 0 ? s.Wrap(spec.origin) : s);
    nbdkit_debug("export '%s': %s, %llu bytes", spec.name.c_str(), spec.file.c_str(),
                 static_cast<unsigned long long>(exp->size()));
    state->exports.push_back(std::move(exp));
  }
  return 0;
}

// --- handshake --------------------------------------------------------------

// Only exports this client may open are listed, so names do not leak.
int dst_list_exports(int, int, struct nbdkit_exports* exports) {
  const Peer peer = CurrentPeer();
  for (const auto& exp : state->exports) {
    if (exp->spec().access.Decide(peer) == AccessMode::kDeny) continue;
    if (nbdkit_add_export(exports, exp->spec().name.c_str(), exp->spec().description.c_str()) == -1)
      return -1;
  }
  return 0;
}

const char* dst_default_export(int, int) {
  return state->config.default_export().c_str();
}

// Only a client that may write can fence: a fenced name on a read-only
// connection (an `ro` rule, readonly=true, nbdkit -r), NBD_OPT_INFO included,
// is refused, so that a reader can neither raise a session's epoch nor learn
// from the confirmation that a session exists. Readers open the plain name.
bool RefuseReadOnlyFence(const Connection& conn, const std::string& name, const Peer& peer) {
  if (!conn.readonly) return false;
  Fail(Status::Error(EPERM, "export '" + name + "': fence: refusing a fenced open from " +
                                peer.ToString() +
                                ": the connection is read-only, and only writers may fence"));
  return true;
}

// Joins the connection to its fence session. Done last in .open, after every
// check that can refuse the client, so that a refused open never raises an
// epoch.
bool JoinFence(const FencedName& fenced, const std::string& name, Connection* conn) {
  const Status s = state->fences.Join(name, fenced.session, fenced.epoch,
                                      state->config.fence_wait(), &conn->fence);
  if (!s.ok()) {
    Fail(s.err() == ETIMEDOUT ? Status::Error(s.err(), s.message() + " (fence-wait)") : s);
    return false;
  }
  conn->fence_confirmation = dst::plugin::FenceConfirmation(fenced);
  nbdkit_debug("export '%s': fence: session %s: joined epoch %" PRIu64 " (was %" PRIu64
               ") after waiting %lld ms",
               name.c_str(), dst::plugin::SessionFingerprint(fenced.session).c_str(),
               conn->fence.epoch(), conn->fence.previous_epoch(),
               static_cast<long long>(conn->fence.waited().count()));
  return true;
}

void* dst_open(int readonly) {
  const char* requested_c = nbdkit_export_name();
  const std::string requested = requested_c ? requested_c : "";
  FencedName fenced;
  if (const Status s = dst::plugin::ParseFencedName(requested, &fenced); !s.ok()) {
    Fail(s.Wrap("export name '" + dst::plugin::RedactedExportName(requested) + "'"));
    return nullptr;
  }
  const std::string name = !fenced.name.empty() ? fenced.name : state->config.default_export();
  const FileExport* exp = FindExport(name);
  if (!exp) {
    nbdkit_error("unknown export '%s'", name.c_str());
    nbdkit_set_error(ENOENT);
    return nullptr;
  }
  const Peer peer = CurrentPeer();
  const AccessMode mode = exp->spec().access.Decide(peer);
  if (mode == AccessMode::kDeny) {
    nbdkit_error("export '%s': access denied to %s", name.c_str(), peer.ToString().c_str());
    nbdkit_set_error(EACCES);
    return nullptr;
  }
  auto conn = std::make_unique<Connection>();
  conn->exp = exp;
  conn->readonly = readonly != 0 || exp->spec().readonly || mode == AccessMode::kReadOnly;
  if (fenced.fenced &&
      (RefuseReadOnlyFence(*conn, name, peer) || !JoinFence(fenced, name, conn.get())))
    return nullptr;
  nbdkit_debug("export '%s' opened by %s (%s%s)", name.c_str(), peer.ToString().c_str(),
               conn->readonly ? "ro" : "rw", fenced.fenced ? ", fenced" : "");
  return conn.release();
}

void dst_close(void* handle) {
  auto* conn = static_cast<Connection*>(handle);
  state->fences.Leave(&conn->fence);
  delete conn;
}

const char* dst_export_description(void* handle) {
  const Connection* conn = AsConnection(handle);
  if (conn->fence.valid()) return conn->fence_confirmation.c_str();
  return conn->exp->spec().description.c_str();
}

// --- capabilities, stated explicitly ---------------------------------------

int64_t dst_get_size(void* handle) {
  return static_cast<int64_t>(AsConnection(handle)->exp->size());
}

int dst_block_size(void*, uint32_t* minimum, uint32_t* preferred, uint32_t* maximum) {
  *minimum = 512;               // sector: what every client can honour
  *preferred = 4096;            // page: avoids read-modify-write on 4K disks
  *maximum = 32 * 1024 * 1024;  // nbdkit's own request limit
  return 0;
}

// A read-only connection is advertised read-only.
int dst_can_write(void* handle) {
  return AsConnection(handle)->readonly ? 0 : 1;
}
int dst_can_flush(void*) {
  return 1;
}
int dst_can_trim(void* handle) {
  return AsConnection(handle)->readonly ? 0 : 1;
}
int dst_can_zero(void* handle) {
  return AsConnection(handle)->readonly ? 0 : 1;
}
// FAST_ZERO is answered honestly: Zero() returns ENOTSUP when it would be slow.
int dst_can_fast_zero(void*) {
  return 1;
}
int dst_can_fua(void*) {
  return NBDKIT_FUA_NATIVE;
}
// Every connection sees the same file and flush is fdatasync of it.
int dst_can_multi_conn(void*) {
  return 1;
}
int dst_can_extents(void* handle) {
  return AsConnection(handle)->exp->can_extents() ? 1 : 0;
}
int dst_can_cache(void*) {
  return NBDKIT_CACHE_NATIVE;
}

// --- data path ----------------------------------------------------------------

// nbdkit already refuses writes on a read-only export; this is the plugin's
// own check, so that an access rule holds even if that ever changes.
int RefuseIfReadOnly(const Connection* conn, const char* op) {
  if (!conn->readonly) return 0;
  return Fail(Status::Error(EPERM, std::string(op) + ": export '" + conn->exp->spec().name +
                                       "' is read-only for this client"));
}

// debug-hold-write: holds the first write covering the configured offset, as
// if it had been delayed in transit, before its fence check. Logged with a
// plain stderr line so that tests see it without nbdkit -v.
void MaybeHoldWrite(uint32_t count, uint64_t offset) {
  const auto& hold = state->config.debug_hold_write();
  if (!hold || hold->offset < offset || hold->offset - offset >= count) return;
  if (state->hold_write_used.exchange(true)) return;
  const auto ms = static_cast<long long>(hold->duration.count());
  std::fprintf(stderr,
               "nbdkit: dst: debug-hold-write: holding write of %" PRIu32 " bytes at %" PRIu64
               " for %lld ms\n",
               count, offset, ms);
  std::this_thread::sleep_for(hold->duration);
  std::fprintf(stderr,
               "nbdkit: dst: debug-hold-write: releasing write of %" PRIu32 " bytes at %" PRIu64
               "\n",
               count, offset);
}

// The fence check of a mutating request, refused with ESHUTDOWN (which nbdkit
// sends as NBD_ESHUTDOWN) when a newer epoch of its session has opened.
int RefuseIfFenced(const Connection* conn, const MutationGuard& guard, const char* op,
                   uint32_t count, uint64_t offset) {
  if (guard.admitted()) return 0;
  return Fail(Status::Error(
      ESHUTDOWN, "export '" + conn->exp->spec().name + "': fence: refusing " + op + " of " +
                     std::to_string(count) + " bytes at " + std::to_string(offset) +
                     " from stale epoch " + std::to_string(conn->fence.epoch()) +
                     " (session current " + std::to_string(guard.current_epoch()) + ")"));
}

int dst_pread(void* handle, void* buf, uint32_t count, uint64_t offset, uint32_t) {
  return Check(AsConnection(handle)->exp->Read(buf, count, offset));
}

int dst_pwrite(void* handle, const void* buf, uint32_t count, uint64_t offset, uint32_t flags) {
  const Connection* conn = AsConnection(handle);
  if (RefuseIfReadOnly(conn, "write") != 0) return -1;
  MaybeHoldWrite(count, offset);
  const MutationGuard guard(state->fences, conn->fence);
  if (RefuseIfFenced(conn, guard, "write", count, offset) != 0) return -1;
  return Check(conn->exp->Write(buf, count, offset, flags & NBDKIT_FLAG_FUA));
}

int dst_flush(void* handle, uint32_t) {
  return Check(AsConnection(handle)->exp->Flush());
}

int dst_trim(void* handle, uint32_t count, uint64_t offset, uint32_t flags) {
  const Connection* conn = AsConnection(handle);
  if (RefuseIfReadOnly(conn, "trim") != 0) return -1;
  const MutationGuard guard(state->fences, conn->fence);
  if (RefuseIfFenced(conn, guard, "trim", count, offset) != 0) return -1;
  return Check(conn->exp->Trim(count, offset, flags & NBDKIT_FLAG_FUA));
}

int dst_zero(void* handle, uint32_t count, uint64_t offset, uint32_t flags) {
  const Connection* conn = AsConnection(handle);
  if (RefuseIfReadOnly(conn, "zero") != 0) return -1;
  const MutationGuard guard(state->fences, conn->fence);
  if (RefuseIfFenced(conn, guard, "zero", count, offset) != 0) return -1;
  const Status s = conn->exp->Zero(count, offset, flags & NBDKIT_FLAG_MAY_TRIM,
                                   flags & NBDKIT_FLAG_FAST_ZERO, flags & NBDKIT_FLAG_FUA);
  // ENOTSUP is not a failure worth logging: nbdkit falls back to writing zeros.
  if (s.err() == ENOTSUP) {
    nbdkit_set_error(ENOTSUP);
    return -1;
  }
  return Check(s);
}

int dst_cache(void* handle, uint32_t count, uint64_t offset, uint32_t) {
  return Check(AsConnection(handle)->exp->Cache(count, offset));
}

int dst_extents(void* handle, uint32_t count, uint64_t offset, uint32_t,
                struct nbdkit_extents* extents) {
  return Check(
      AsConnection(handle)->exp->Extents(count, offset, [extents](const FileExport::Extent& e) {
        const uint32_t type = e.hole ? (NBDKIT_EXTENT_HOLE | NBDKIT_EXTENT_ZERO) : 0;
        if (nbdkit_add_extent(extents, e.offset, e.length, type) == -1)
          return Status::FromErrno(errno, "nbdkit_add_extent");
        return Status::Ok();
      }));
}

nbdkit_plugin MakePlugin() {
  nbdkit_plugin p{};
  p.name = "dst";
  p.longname = "dst export node";
  p.version = "0.1.0";
  p.description = "Serves local files or block devices as NBD exports for dst volumes";
  p.load = dst_load;
  p.unload = dst_unload;
  p.config = dst_config;
  p.config_complete = dst_config_complete;
  p.thread_model = dst_thread_model;
  p.config_help = dst::plugin::PluginConfig::Help();
  p.magic_config_key = "file";
  p.get_ready = dst_get_ready;
  p.list_exports = dst_list_exports;
  p.default_export = dst_default_export;
  p.open = dst_open;
  p.close = dst_close;
  p.export_description = dst_export_description;
  p.get_size = dst_get_size;
  p.block_size = dst_block_size;
  p.can_write = dst_can_write;
  p.can_flush = dst_can_flush;
  p.can_trim = dst_can_trim;
  p.can_zero = dst_can_zero;
  p.can_fast_zero = dst_can_fast_zero;
  p.can_fua = dst_can_fua;
  p.can_multi_conn = dst_can_multi_conn;
  p.can_extents = dst_can_extents;
  p.can_cache = dst_can_cache;
  p.pread = dst_pread;
  p.pwrite = dst_pwrite;
  p.flush = dst_flush;
  p.trim = dst_trim;
  p.zero = dst_zero;
  p.cache = dst_cache;
  p.extents = dst_extents;
  return p;
}

nbdkit_plugin plugin = MakePlugin();

}  // namespace

// The loosest model the plugin supports; dst_thread_model() tightens it to
// serialised requests unless the node is told otherwise.
#define THREAD_MODEL NBDKIT_THREAD_MODEL_PARALLEL
NBDKIT_REGISTER_PLUGIN(plugin)
