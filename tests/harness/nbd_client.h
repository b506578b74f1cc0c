// NbdClient: an RAII wrapper over one libnbd handle (C API), for tests that
// need to assert exact protocol outcomes. Every operation returns an NbdStatus:
// the errno libnbd reported (0 on success) and nbd_get_error()'s text, taken
// immediately after the call (libnbd keeps them per thread). Capability and
// size queries return plain values and throw std::runtime_error if libnbd
// cannot answer (e.g. not connected), because a test cannot go on without them.
//
// Every handle asks for base:allocation and for full export info (name,
// description, block size) during the handshake.
#pragma once

#include <cstdint>
#include <ostream>
#include <span>
#include <string>
#include <vector>

struct nbd_handle;

namespace dst::test {

struct NbdStatus {
  int err = 0;          // errno, 0 on success
  std::string message;  // nbd_get_error() on failure

  bool ok() const { return err == 0; }
  std::string ToString() const;
};
std::ostream& operator<<(std::ostream& os, const NbdStatus& s);

// One base:allocation extent. flags are LIBNBD_STATE_HOLE / LIBNBD_STATE_ZERO.
struct Extent {
  uint64_t offset = 0;
  uint64_t length = 0;
  uint32_t flags = 0;
  bool hole() const;
  bool zero() const;
};

struct ExportEntry {
  std::string name;
  std::string description;
};

struct BlockSizes {
  int64_t minimum = 0;
  int64_t preferred = 0;
  int64_t maximum = 0;
};

class NbdClient {
 public:
  NbdClient();  // throws if libnbd cannot create a handle
  ~NbdClient();
  NbdClient(const NbdClient&) = delete;
  NbdClient& operator=(const NbdClient&) = delete;

  nbd_handle* handle() { return h_; }

  // Connects and completes the handshake for the export named in the URI.
  NbdStatus Connect(const std::string& uri);
  // Connects but stays in option negotiation (nbd_set_opt_mode), so that
  // OptGo/OptList/OptAbort can be driven one by one.
  NbdStatus ConnectOptMode(const std::string& uri);
  NbdStatus SetExportName(const std::string& name);
  // Turns off libnbd's client-side checks (0) so that a request the server
  // advertised it would refuse is sent anyway and the server's answer seen.
  NbdStatus SetStrictMode(uint32_t flags);
  NbdStatus OptGo();
  NbdStatus OptList(std::vector<ExportEntry>* exports);
  NbdStatus OptAbort();
  NbdStatus Shutdown();

  // Lists a server's exports (NBD_OPT_LIST) on a connection of its own.
  static NbdStatus ListExports(const std::string& uri, std::vector<ExportEntry>* exports);

  // flags: LIBNBD_CMD_FLAG_* (FUA, NO_HOLE, FAST_ZERO, REQ_ONE, DF).
  NbdStatus Pread(std::span<uint8_t> buf, uint64_t offset, uint32_t flags = 0);
  NbdStatus Pwrite(std::span<const uint8_t> buf, uint64_t offset, uint32_t flags = 0);
  NbdStatus Flush(uint32_t flags = 0);
  NbdStatus Trim(uint64_t count, uint64_t offset, uint32_t flags = 0);
  NbdStatus Zero(uint64_t count, uint64_t offset, uint32_t flags = 0);
  NbdStatus Cache(uint64_t count, uint64_t offset, uint32_t flags = 0);
  // One NBD_CMD_BLOCK_STATUS; appends the base:allocation extents the server
  // returned (which may cover less, or more, than asked).
  NbdStatus BlockStatus(uint64_t count, uint64_t offset, std::vector<Extent>* extents,
                        uint32_t flags = 0);
  // Repeats BlockStatus until [offset, offset+count) is covered; extents are
  // clipped to that range and adjacent ones of the same type merged.
  NbdStatus Map(uint64_t count, uint64_t offset, std::vector<Extent>* extents);

  // Reads count bytes at offset or throws with the error.
  std::vector<uint8_t> ReadOrThrow(uint64_t count, uint64_t offset);

  int64_t Size();
  bool IsReadOnly();
  bool CanFlush();
  bool CanFua();
  bool CanTrim();
  bool CanZero();
  bool CanFastZero();
  bool CanMultiConn();
  bool CanCache();
  bool CanBlockStatus();  // base:allocation negotiated
  BlockSizes GetBlockSizes();
  std::string ExportName();         // as the server reported it
  std::string ExportDescription();  // "" if the server sent none

 private:
  bool Flag(int (*query)(nbd_handle*), const char* what);

  nbd_handle* h_ = nullptr;
};

}  // namespace dst::test
