#include "aggregator/map/kernel_nbd.h"

#include <linux/nbd-netlink.h>
#include <netlink/genl/ctrl.h>
#include <netlink/genl/genl.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <memory>

namespace dst::aggregator::map {

namespace {

struct SocketDeleter {
  void operator()(nl_sock* s) const { nl_socket_free(s); }
};
struct MessageDeleter {
  void operator()(nl_msg* m) const { nlmsg_free(m); }
};
using NlSocket = std::unique_ptr<nl_sock, SocketDeleter>;
using NlMessage = std::unique_ptr<nl_msg, MessageDeleter>;

// libnl's error codes back to errno, for the ones a command names.
int ErrnoOf(int nl_error) {
  switch (nl_error < 0 ? -nl_error : nl_error) {
    case NLE_BUSY:
      return EBUSY;
    case NLE_PERM:
      return EPERM;
    case NLE_INVAL:
      return EINVAL;
    case NLE_OBJ_NOTFOUND:
      return ENOENT;
    case NLE_NOMEM:
      return ENOMEM;
  }
  return EIO;
}

// A generic netlink socket and the nbd family's number.
Status OpenNbdFamily(NlSocket* out, int* family) {
  NlSocket sock(nl_socket_alloc());
  if (!sock) return Status::Error(ENOMEM, "netlink: no memory for a socket");
  if (const int e = genl_connect(sock.get()); e < 0)
    return Status::Error(ErrnoOf(e), std::string("netlink: ") + nl_geterror(e));
  *family = genl_ctrl_resolve(sock.get(), NBD_GENL_FAMILY_NAME);
  if (*family < 0) {
    if (!std::filesystem::exists("/sys/module/nbd"))
      return Status::Error(ENODEV, "the kernel's nbd module is not loaded (modprobe nbd)");
    return Status::Error(ENODEV,
                         "the kernel has no netlink family 'nbd' (its NBD driver is older than "
                         "Linux 4.12)");
  }
  *out = std::move(sock);
  return Status::Ok();
}

Status Failed(int e, const std::string& what, int index) {
  const std::string device = index >= 0 ? "/dev/nbd" + std::to_string(index) : "an nbd device";
  switch (ErrnoOf(e)) {
    case EBUSY:
      return Status::Error(EBUSY, device + " is busy (connected already, or still in use)");
    case EPERM:
      return Status::Error(EPERM,
                           what + " " + device + ": not permitted (needs root: CAP_SYS_ADMIN)");
  }
  return Status::Error(
      ErrnoOf(e), what + " " + device + ": " + nl_geterror(e) + " (the kernel log may say more)");
}

int ReadIndex(nl_msg* message, void* arg) {
  nlattr* attrs[NBD_ATTR_MAX + 1] = {};
  if (genlmsg_parse(nlmsg_hdr(message), 0, attrs, NBD_ATTR_MAX, nullptr) == 0 &&
      attrs[NBD_ATTR_INDEX] != nullptr)
    *static_cast<int*>(arg) = static_cast<int>(nla_get_u32(attrs[NBD_ATTR_INDEX]));
  return NL_OK;
}

Status Put(int e) {
  return e < 0 ? Status::Error(EMSGSIZE, "netlink: message too large") : Status::Ok();
}

}  // namespace

Status ConnectDevice(const KernelConnect& request, int* index) {
  NlSocket sock;
  int family = 0;
  DST_RETURN_IF_ERROR(OpenNbdFamily(&sock, &family));
  NlMessage msg(nlmsg_alloc());
  if (!msg) return Status::Error(ENOMEM, "netlink: no memory for a message");
  if (!genlmsg_put(msg.get(), NL_AUTO_PORT, NL_AUTO_SEQ, family, 0, 0, NBD_CMD_CONNECT,
                   NBD_GENL_VERSION))
    return Status::Error(EMSGSIZE, "netlink: message too large");
  if (request.index)
    DST_RETURN_IF_ERROR(Put(nla_put_u32(msg.get(), NBD_ATTR_INDEX, *request.index)));
  DST_RETURN_IF_ERROR(Put(nla_put_u64(msg.get(), NBD_ATTR_SIZE_BYTES, request.size_bytes)));
  DST_RETURN_IF_ERROR(Put(nla_put_u64(msg.get(), NBD_ATTR_BLOCK_SIZE_BYTES, request.block_size)));
  DST_RETURN_IF_ERROR(Put(nla_put_u64(msg.get(), NBD_ATTR_SERVER_FLAGS, request.server_flags)));
  if (request.timeout.count() > 0)
    DST_RETURN_IF_ERROR(Put(
        nla_put_u64(msg.get(), NBD_ATTR_TIMEOUT, static_cast<uint64_t>(request.timeout.count()))));
  DST_RETURN_IF_ERROR(
      Put(nla_put_string(msg.get(), NBD_ATTR_BACKEND_IDENTIFIER, request.backend.c_str())));
  nlattr* sockets = nla_nest_start(msg.get(), NBD_ATTR_SOCKETS);
  if (sockets == nullptr) return Status::Error(EMSGSIZE, "netlink: message too large");
  for (int fd : request.fds) {
    nlattr* item = nla_nest_start(msg.get(), NBD_SOCK_ITEM);
    if (item == nullptr) return Status::Error(EMSGSIZE, "netlink: message too large");
    DST_RETURN_IF_ERROR(Put(nla_put_u32(msg.get(), NBD_SOCK_FD, static_cast<uint32_t>(fd))));
    nla_nest_end(msg.get(), item);
  }
  nla_nest_end(msg.get(), sockets);

  int chosen = request.index.value_or(-1);
  nl_socket_modify_cb(sock.get(), NL_CB_VALID, NL_CB_CUSTOM, ReadIndex, &chosen);
  // nl_send_sync frees the message.
  const int e = nl_send_sync(sock.get(), msg.release());
  if (e < 0) return Failed(e, "connect", request.index.value_or(-1));
  if (chosen < 0) return Status::Error(EPROTO, "connect: the kernel did not say which device");
  *index = chosen;
  return Status::Ok();
}

Status DisconnectDevice(int index) {
  NlSocket sock;
  int family = 0;
  DST_RETURN_IF_ERROR(OpenNbdFamily(&sock, &family));
  NlMessage msg(nlmsg_alloc());
  if (!msg) return Status::Error(ENOMEM, "netlink: no memory for a message");
  if (!genlmsg_put(msg.get(), NL_AUTO_PORT, NL_AUTO_SEQ, family, 0, 0, NBD_CMD_DISCONNECT,
                   NBD_GENL_VERSION))
    return Status::Error(EMSGSIZE, "netlink: message too large");
  DST_RETURN_IF_ERROR(Put(nla_put_u32(msg.get(), NBD_ATTR_INDEX, static_cast<uint32_t>(index))));
  const int e = nl_send_sync(sock.get(), msg.release());
  if (e < 0) return Failed(e, "disconnect", index);
  return Status::Ok();
}

}  // namespace dst::aggregator::map
