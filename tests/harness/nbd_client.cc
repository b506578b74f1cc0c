#include "tests/harness/nbd_client.h"

#include <libnbd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <stdexcept>

namespace dst::test {
namespace {

// Captures libnbd's per-thread error right after a call.
NbdStatus Result(int rc) {
  if (rc != -1) return {};
  const int err = nbd_get_errno();
  const char* msg = nbd_get_error();
  // A failure without an errno is still a failure.
  return {err != 0 ? err : EIO, msg ? msg : "unknown libnbd error"};
}

std::runtime_error LibnbdError(const char* what) {
  const char* msg = nbd_get_error();
  return std::runtime_error(std::string(what) + ": " + (msg ? msg : "unknown libnbd error"));
}

int CollectExtents(void* user_data, const char* metacontext, uint64_t offset, uint32_t* entries,
                   size_t nr_entries, int*) {
  if (std::strcmp(metacontext, LIBNBD_CONTEXT_BASE_ALLOCATION) != 0) return 0;
  auto* out = static_cast<std::vector<Extent>*>(user_data);
  for (size_t i = 0; i + 1 < nr_entries; i += 2) {
    out->push_back({offset, entries[i], entries[i + 1]});
    offset += entries[i];
  }
  return 0;
}

int CollectExport(void* user_data, const char* name, const char* description) {
  static_cast<std::vector<ExportEntry>*>(user_data)->push_back(
      {name ? name : "", description ? description : ""});
  return 0;
}

// Appends e to out, clipped to [begin, end) and merged with a same-typed
// predecessor.
void AppendClipped(const Extent& e, uint64_t begin, uint64_t end, std::vector<Extent>* out) {
  const uint64_t lo = std::max(e.offset, begin);
  const uint64_t hi = std::min(e.offset + e.length, end);
  if (lo >= hi) return;
  if (!out->empty() && out->back().flags == e.flags &&
      out->back().offset + out->back().length == lo) {
    out->back().length += hi - lo;
    return;
  }
  out->push_back({lo, hi - lo, e.flags});
}

}  // namespace

std::string NbdStatus::ToString() const {
  if (ok()) return "ok";
  return std::string(strerrorname_np(err) ? strerrorname_np(err) : "errno") + " (" +
         std::to_string(err) + "): " + message;
}

std::ostream& operator<<(std::ostream& os, const NbdStatus& s) {
  return os << s.ToString();
}

bool Extent::hole() const {
  return flags & LIBNBD_STATE_HOLE;
}
bool Extent::zero() const {
  return flags & LIBNBD_STATE_ZERO;
}

NbdClient::NbdClient() : h_(nbd_create()) {
  if (!h_) throw LibnbdError("nbd_create");
  if (nbd_add_meta_context(h_, LIBNBD_CONTEXT_BASE_ALLOCATION) == -1 ||
      nbd_set_full_info(h_, true) == -1) {
    nbd_close(h_);
    throw LibnbdError("configuring libnbd handle");
  }
}

NbdClient::~NbdClient() {
  nbd_close(h_);
}

NbdStatus NbdClient::Connect(const std::string& uri) {
  return Result(nbd_connect_uri(h_, uri.c_str()));
}

NbdStatus NbdClient::ConnectOptMode(const std::string& uri) {
  if (nbd_set_opt_mode(h_, true) == -1) return Result(-1);
  return Connect(uri);
}

NbdStatus NbdClient::SetExportName(const std::string& name) {
  return Result(nbd_set_export_name(h_, name.c_str()));
}

NbdStatus NbdClient::SetStrictMode(uint32_t flags) {
  return Result(nbd_set_strict_mode(h_, flags));
}

NbdStatus NbdClient::OptGo() {
  return Result(nbd_opt_go(h_));
}

NbdStatus NbdClient::OptList(std::vector<ExportEntry>* exports) {
  return Result(nbd_opt_list(h_, nbd_list_callback{CollectExport, exports, nullptr}));
}

NbdStatus NbdClient::OptAbort() {
  return Result(nbd_opt_abort(h_));
}

NbdStatus NbdClient::Shutdown() {
  return Result(nbd_shutdown(h_, 0));
}

NbdStatus NbdClient::ListExports(const std::string& uri, std::vector<ExportEntry>* exports) {
  NbdClient c;
  if (NbdStatus s = c.ConnectOptMode(uri); !s.ok()) return s;
  NbdStatus s = c.OptList(exports);
  c.OptAbort();  // a clean goodbye; the listing is what matters
  return s;
}

NbdStatus NbdClient::Pread(std::span<uint8_t> buf, uint64_t offset, uint32_t flags) {
  return Result(nbd_pread(h_, buf.data(), buf.size(), offset, flags));
}

NbdStatus NbdClient::Pwrite(std::span<const uint8_t> buf, uint64_t offset, uint32_t flags) {
  return Result(nbd_pwrite(h_, buf.data(), buf.size(), offset, flags));
}

NbdStatus NbdClient::Flush(uint32_t flags) {
  return Result(nbd_flush(h_, flags));
}

NbdStatus NbdClient::Trim(uint64_t count, uint64_t offset, uint32_t flags) {
  return Result(nbd_trim(h_, count, offset, flags));
}

NbdStatus NbdClient::Zero(uint64_t count, uint64_t offset, uint32_t flags) {
  return Result(nbd_zero(h_, count, offset, flags));
}

NbdStatus NbdClient::Cache(uint64_t count, uint64_t offset, uint32_t flags) {
  return Result(nbd_cache(h_, count, offset, flags));
}

NbdStatus NbdClient::BlockStatus(uint64_t count, uint64_t offset, std::vector<Extent>* extents,
                                 uint32_t flags) {
  return Result(nbd_block_status(h_, count, offset,
                                 nbd_extent_callback{CollectExtents, extents, nullptr}, flags));
}

NbdStatus NbdClient::Map(uint64_t count, uint64_t offset, std::vector<Extent>* extents) {
  const uint64_t end = offset + count;
  uint64_t pos = offset;
  while (pos < end) {
    std::vector<Extent> got;
    // Requests are limited to 32 bits; 2 GiB steps keep them aligned.
    const uint64_t ask = std::min<uint64_t>(end - pos, uint64_t{1} << 31);
    if (NbdStatus s = BlockStatus(ask, pos, &got); !s.ok()) return s;
    if (got.empty() || got.front().offset != pos)
      return {EPROTO, "block status at " + std::to_string(pos) + " returned no extent there"};
    for (const Extent& e : got)
      AppendClipped(e, offset, end, extents);
    pos = std::max(pos, std::min(end, got.back().offset + got.back().length));
  }
  return {};
}

std::vector<uint8_t> NbdClient::ReadOrThrow(uint64_t count, uint64_t offset) {
  std::vector<uint8_t> buf(count);
  if (NbdStatus s = Pread(buf, offset); !s.ok())
    throw std::runtime_error("pread " + std::to_string(count) + "@" + std::to_string(offset) +
                             ": " + s.ToString());
  return buf;
}

int64_t NbdClient::Size() {
  const int64_t size = nbd_get_size(h_);
  if (size < 0) throw LibnbdError("nbd_get_size");
  return size;
}

bool NbdClient::Flag(int (*query)(nbd_handle*), const char* what) {
  const int r = query(h_);
  if (r < 0) throw LibnbdError(what);
  return r != 0;
}

bool NbdClient::IsReadOnly() {
  return Flag(nbd_is_read_only, "nbd_is_read_only");
}
bool NbdClient::CanFlush() {
  return Flag(nbd_can_flush, "nbd_can_flush");
}
bool NbdClient::CanFua() {
  return Flag(nbd_can_fua, "nbd_can_fua");
}
bool NbdClient::CanTrim() {
  return Flag(nbd_can_trim, "nbd_can_trim");
}
bool NbdClient::CanZero() {
  return Flag(nbd_can_zero, "nbd_can_zero");
}
bool NbdClient::CanFastZero() {
  return Flag(nbd_can_fast_zero, "nbd_can_fast_zero");
}
bool NbdClient::CanMultiConn() {
  return Flag(nbd_can_multi_conn, "nbd_can_multi_conn");
}
bool NbdClient::CanCache() {
  return Flag(nbd_can_cache, "nbd_can_cache");
}

bool NbdClient::CanBlockStatus() {
  const int r = nbd_can_meta_context(h_, LIBNBD_CONTEXT_BASE_ALLOCATION);
  if (r < 0) throw LibnbdError("nbd_can_meta_context");
  return r != 0;
}

BlockSizes NbdClient::GetBlockSizes() {
  BlockSizes b{nbd_get_block_size(h_, LIBNBD_SIZE_MINIMUM),
               nbd_get_block_size(h_, LIBNBD_SIZE_PREFERRED),
               nbd_get_block_size(h_, LIBNBD_SIZE_MAXIMUM)};
  if (b.minimum < 0 || b.preferred < 0 || b.maximum < 0) throw LibnbdError("nbd_get_block_size");
  return b;
}

std::string NbdClient::ExportName() {
  char* name = nbd_get_canonical_export_name(h_);
  if (!name) throw LibnbdError("nbd_get_canonical_export_name");
  std::string out = name;
  std::free(name);
  return out;
}

std::string NbdClient::ExportDescription() {
  char* desc = nbd_get_export_description(h_);
  if (!desc) return "";  // the server did not send one
  std::string out = desc;
  std::free(desc);
  return out;
}

}  // namespace dst::test
