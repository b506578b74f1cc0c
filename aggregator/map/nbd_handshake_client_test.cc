#include "aggregator/map/nbd_handshake_client.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <thread>
#include <vector>

#include <doctest/doctest.h>

#include "common/nbd_protocol.h"

namespace dst::aggregator::map::nbd_handshake_client_test {
namespace {

using Bytes = std::vector<uint8_t>;

// The server's end of a socketpair, played by a script on its own thread.
class ScriptedServer {
 public:
  ScriptedServer() {
    int fds[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0);
    client_ = fds[0];
    server_ = fds[1];
  }
  ~ScriptedServer() {
    if (thread_.joinable()) thread_.join();
    ::close(client_);
    if (server_ >= 0) ::close(server_);
  }
  int client() const { return client_; }

  // Sends `before`, reads `expect_bytes` from the client, sends `after` and (with `close`)
  // closes its end.
  void Run(Bytes before, Bytes after, size_t expect_bytes, bool close = true) {
    thread_ = std::thread(
        [this, before = std::move(before), after = std::move(after), expect_bytes, close] {
          Send(before);
          received_.resize(expect_bytes);
          size_t got = 0;
          while (got < expect_bytes) {
            const ssize_t n = ::read(server_, received_.data() + got, expect_bytes - got);
            if (n <= 0) break;
            got += static_cast<size_t>(n);
          }
          received_.resize(got);
          Send(after);
          if (close) {
            ::close(server_);
            server_ = -1;
          }
        });
  }
  const Bytes& received() {
    if (thread_.joinable()) thread_.join();
    return received_;
  }

 private:
  void Send(const Bytes& bytes) {
    if (!bytes.empty())
      REQUIRE(::write(server_, bytes.data(), bytes.size()) == ssize_t(bytes.size()));
  }

  int client_ = -1;
  int server_ = -1;
  std::thread thread_;
  Bytes received_;
};

void Append(Bytes* b, const uint8_t* p, size_t n) {
  b->insert(b->end(), p, p + n);
}

Bytes Greeting(uint16_t flags = nbd::kFlagFixedNewstyle | nbd::kFlagNoZeroes) {
  Bytes b(18);
  nbd::StoreBE64(b.data(), nbd::kNbdMagic);
  nbd::StoreBE64(b.data() + 8, nbd::kIHaveOpt);
  nbd::StoreBE16(b.data() + 16, flags);
  return b;
}

Bytes Reply(uint32_t type, const Bytes& payload, uint32_t option = nbd::kOptGo) {
  Bytes b(nbd::OptionReplyHeader::kSize);
  nbd::OptionReplyHeader{
      .option = option, .reply_type = type, .length = static_cast<uint32_t>(payload.size())}
      .Encode(b.data());
  b.insert(b.end(), payload.begin(), payload.end());
  return b;
}

Bytes ExportInfoPayload(uint64_t size, uint16_t flags) {
  Bytes b(nbd::kInfoExportLength);
  nbd::StoreBE16(b.data(), nbd::kInfoExport);
  nbd::StoreBE64(b.data() + 2, size);
  nbd::StoreBE16(b.data() + 10, flags);
  return b;
}

// What the client sends for NBD_OPT_GO of `name`: its flags and the option.
size_t ClientBytes(const std::string& name) {
  return 4 + nbd::OptionHeader::kSize + 4 + name.size() + 2;
}

Bytes Concat(std::initializer_list<Bytes> parts) {
  Bytes all;
  for (const Bytes& p : parts)
    Append(&all, p.data(), p.size());
  return all;
}

constexpr std::chrono::milliseconds kTimeout{2000};

TEST_CASE("NegotiateExport: NBD_OPT_GO for the name, the size and flags from NBD_INFO_EXPORT") {
  ScriptedServer server;
  const uint16_t flags = nbd::kFlagHasFlags | nbd::kFlagSendFlush | nbd::kFlagCanMultiConn;
  Bytes block_size_info(nbd::kInfoBlockSizeLength);
  nbd::StoreBE16(block_size_info.data(), nbd::kInfoBlockSize);
  server.Run(
      Greeting(),
      Concat({Reply(nbd::kRepInfo, block_size_info),
              Reply(nbd::kRepInfo, ExportInfoPayload(40u << 20, flags)), Reply(nbd::kRepAck, {})}),
      ClientBytes("vol0"));
  ExportInfo info;
  REQUIRE(NegotiateExport(server.client(), "vol0", "agg", kTimeout, &info).ok());
  CHECK(info.size == 40u << 20);
  CHECK(info.flags == flags);

  const Bytes& sent = server.received();
  REQUIRE(sent.size() == ClientBytes("vol0"));
  CHECK(nbd::LoadBE32(sent.data()) == (nbd::kClientFlagFixedNewstyle | nbd::kClientFlagNoZeroes));
  const auto option = nbd::OptionHeader::Decode(sent.data() + 4);
  CHECK(option.magic == nbd::kIHaveOpt);
  CHECK(option.option == nbd::kOptGo);
  CHECK(option.length == 4 + 4 + 2);
  const uint8_t* data = sent.data() + 4 + nbd::OptionHeader::kSize;
  CHECK(nbd::LoadBE32(data) == 4);
  CHECK(std::string(data + 4, data + 8) == "vol0");
  CHECK(nbd::LoadBE16(data + 8) == 0);
}

TEST_CASE("NegotiateExport: without NO_ZEROES from the server, the client does not ask for it") {
  ScriptedServer server;
  server.Run(Greeting(nbd::kFlagFixedNewstyle),
             Concat({Reply(nbd::kRepInfo, ExportInfoPayload(4096, nbd::kFlagHasFlags)),
                     Reply(nbd::kRepAck, {})}),
             ClientBytes(""));
  ExportInfo info;
  REQUIRE(NegotiateExport(server.client(), "", "agg", kTimeout, &info).ok());
  CHECK(nbd::LoadBE32(server.received().data()) == nbd::kClientFlagFixedNewstyle);
}

TEST_CASE("NegotiateExport: the server's refusals are one clear error each") {
  struct Case {
    uint32_t reply;
    int err;
    std::string message;
  };
  const Case cases[] = {
      {nbd::kRepErrUnknown, ENOENT, "unknown volume 'nope' (agg has no such export)"},
      {nbd::kRepErrTlsReqd, EPROTONOSUPPORT,
       "agg requires TLS, which the kernel's NBD client cannot do: map through a listener "
       "without --tls=require"},
      {nbd::kRepErrUnsup, EPROTONOSUPPORT, "agg: the server does not support NBD_OPT_GO"},
      {nbd::kRepErrPolicy, EPROTO, "agg: export 'nope' refused: option reply error 2 (go away)"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.message);
    ScriptedServer server;
    const std::string text = "go away";
    server.Run(Greeting(), Reply(c.reply, Bytes(text.begin(), text.end())), ClientBytes("nope"));
    ExportInfo info;
    const Status s = NegotiateExport(server.client(), "nope", "agg", kTimeout, &info);
    CHECK(s.err() == c.err);
    CHECK(s.message() == c.message);
  }
}

TEST_CASE("NegotiateExport: what is not an NBD server is refused") {
  SUBCASE("bad magic") {
    ScriptedServer server;
    Bytes greeting = Greeting();
    greeting[0] = 'X';
    server.Run(greeting, {}, 0);
    ExportInfo info;
    const Status s = NegotiateExport(server.client(), "v", "agg", kTimeout, &info);
    CHECK(s.err() == EPROTO);
    CHECK(s.message() == "agg: bad greeting (only fixed newstyle is supported): not an NBD server");
  }
  SUBCASE("ACK without NBD_INFO_EXPORT") {
    ScriptedServer server;
    server.Run(Greeting(), Reply(nbd::kRepAck, {}), ClientBytes("v"));
    ExportInfo info;
    const Status s = NegotiateExport(server.client(), "v", "agg", kTimeout, &info);
    CHECK(s.err() == EPROTO);
    CHECK(s.message() ==
          "agg: NBD_OPT_GO acknowledged without the export's size: not an NBD server");
  }
  SUBCASE("a reply to another option") {
    ScriptedServer server;
    server.Run(Greeting(), Reply(nbd::kRepAck, {}, nbd::kOptList), ClientBytes("v"));
    ExportInfo info;
    CHECK(NegotiateExport(server.client(), "v", "agg", kTimeout, &info).err() == EPROTO);
  }
  SUBCASE("closed in the middle") {
    ScriptedServer server;
    const Bytes greeting = Greeting();
    server.Run(Bytes(greeting.begin(), greeting.begin() + 10), {}, 0);
    ExportInfo info;
    const Status s = NegotiateExport(server.client(), "v", "agg", kTimeout, &info);
    CHECK(s.err() == EPROTO);
    CHECK(s.message() == "agg: closed the connection in the handshake");
  }
}

TEST_CASE("NegotiateExport: a server that stops answering times out") {
  ScriptedServer server;
  server.Run(Greeting(), {}, ClientBytes("v"), /*close=*/false);
  ExportInfo info;
  const auto start = std::chrono::steady_clock::now();
  const Status s =
      NegotiateExport(server.client(), "v", "agg", std::chrono::milliseconds(200), &info);
  CHECK(s.err() == ETIMEDOUT);
  CHECK(s.message() == "agg: handshake timed out");
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(2));
}

}  // namespace
}  // namespace dst::aggregator::map::nbd_handshake_client_test
