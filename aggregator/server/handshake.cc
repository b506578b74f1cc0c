#include "aggregator/server/handshake.h"

#include <algorithm>
#include <cerrno>
#include <vector>

#include "aggregator/server/event_loops.h"
#include "common/log.h"
#include "common/nbd_protocol.h"

namespace dst::server {

using namespace dst::nbd;

namespace {

// A parser over an option's payload that never reads past its end.
class PayloadReader {
 public:
  explicit PayloadReader(const std::vector<uint8_t>& data) : data_(data) {}
  bool U16(uint16_t* v) { return Take(2) ? (*v = LoadBE16(last_), true) : false; }
  bool U32(uint32_t* v) { return Take(4) ? (*v = LoadBE32(last_), true) : false; }
  bool String(uint32_t length, std::string* s) {
    if (length > kMaxStringLength || !Take(length)) return false;
    s->assign(reinterpret_cast<const char*>(last_), length);
    return true;
  }
  bool AtEnd() const { return pos_ == data_.size(); }

 private:
  bool Take(size_t n) {
    if (data_.size() - pos_ < n) return false;
    last_ = data_.data() + pos_;
    pos_ += n;
    return true;
  }
  const std::vector<uint8_t>& data_;
  size_t pos_ = 0;
  const uint8_t* last_ = nullptr;
};

void AppendString(std::vector<uint8_t>& v, const std::string& s) {
  v.insert(v.end(), s.begin(), s.end());
}

// One handshake: the state of the option haggling on one connection.
class Handshake {
 public:
  Handshake(ClientStream& stream, const ExportRegistry& registry, ServerTls* tls, Negotiated* out,
            asio::any_io_executor home)
      : stream_(stream), registry_(registry), tls_(tls), out_(out), home_(std::move(home)) {}

  asio::awaitable<Status> Run() {
    DST_CO_RETURN_IF_ERROR(co_await Greet());
    for (int count = 0; count < kMaxOptions; ++count) {
      OptionHeader header;
      DST_CO_RETURN_IF_ERROR(co_await ReadOptionHeader(&header));
      option_ = header.option;
      bool done = false;
      DST_CO_RETURN_IF_ERROR(co_await HandleOption(header.length, &done));
      if (done) co_return Status::Ok();
    }
    co_return Status::Error(EPROTO, "more than " + std::to_string(kMaxOptions) + " options");
  }

 private:
  asio::awaitable<Status> Greet() {
    uint8_t hello[18];
    StoreBE64(hello, kNbdMagic);
    StoreBE64(hello + 8, kIHaveOpt);
    StoreBE16(hello + 16, kFlagFixedNewstyle | kFlagNoZeroes);
    DST_CO_RETURN_IF_ERROR(co_await stream_.WriteAll(asio::buffer(hello), "handshake"));
    uint8_t flags[4];
    DST_CO_RETURN_IF_ERROR(co_await stream_.ReadExact(flags, 4, "client flags"));
    client_flags_ = LoadBE32(flags);
    // Unknown client flags: the spec says to close the connection.
    if (client_flags_ & ~kClientFlagsKnown)
      co_return Status::Error(EPROTO, "unknown client flags " + std::to_string(client_flags_));
    if (!(client_flags_ & kClientFlagFixedNewstyle))
      co_return Status::Error(EPROTO, "client does not speak fixed newstyle");
    co_return Status::Ok();
  }

  asio::awaitable<Status> ReadOptionHeader(OptionHeader* header) {
    uint8_t raw[OptionHeader::kSize];
    DST_CO_RETURN_IF_ERROR(co_await stream_.ReadExact(raw, sizeof raw, "option header"));
    *header = OptionHeader::Decode(raw);
    if (header->magic != kIHaveOpt) co_return Status::Error(EPROTO, "bad option magic");
    co_return Status::Ok();
  }

  asio::awaitable<Status> HandleOption(uint32_t length, bool* done) {
    if (length > kMaxOptionLength) {
      // EXPORT_NAME has no error reply: the only answer is to hang up.
      if (option_ == kOptExportName) co_return Status::Error(EPROTO, "export name too long");
      DST_CO_RETURN_IF_ERROR(co_await stream_.Discard(length, "oversized option"));
      co_return co_await ReplyError(kRepErrTooBig, "option too long");
    }
    payload_.resize(length);
    DST_CO_RETURN_IF_ERROR(co_await stream_.ReadExact(payload_.data(), length, "option data"));
    if (TlsRequired() && option_ != kOptStartTls && option_ != kOptAbort) {
      // EXPORT_NAME cannot be refused: the spec's answer is to hang up.
      if (option_ == kOptExportName)
        co_return Status::Error(EACCES, "NBD_OPT_EXPORT_NAME before TLS; TLS is required");
      co_return co_await ReplyError(kRepErrTlsReqd, "TLS is required");
    }
    switch (option_) {
      case kOptStartTls:
        co_return co_await StartTls();
      case kOptExportName:
        co_return co_await ExportName(done);
      case kOptAbort:
        (void)co_await Reply(kRepAck, {});  // best effort: the client may already be gone
        co_return Status::Error(ESHUTDOWN, "client sent NBD_OPT_ABORT");
      case kOptList:
        co_return co_await List();
      case kOptStructuredReply:
        co_return co_await StructuredReply();
      case kOptInfo:
        co_return co_await InfoOrGo(false, done);
      case kOptGo:
        co_return co_await InfoOrGo(true, done);
      case kOptListMetaContext:
        co_return co_await MetaContext(false);
      case kOptSetMetaContext:
        co_return co_await MetaContext(true);
      default:
        co_return co_await ReplyError(kRepErrUnsup,
                                      std::string(OptionName(option_)) + " not supported");
    }
  }

  asio::awaitable<Status> Reply(uint32_t type, const std::vector<uint8_t>& data) {
    OptionReplyHeader header{kOptionReplyMagic, option_, type, static_cast<uint32_t>(data.size())};
    const auto raw = header.Encode();
    const std::array<asio::const_buffer, 2> buffers{asio::buffer(raw), asio::buffer(data)};
    co_return co_await stream_.WriteAll(buffers, "option reply");
  }

  asio::awaitable<Status> ReplyError(uint32_t type, const std::string& message) {
    LOG_DEBUG("handshake: %s: %s", OptionName(option_), message.c_str());
    co_return co_await Reply(type, std::vector<uint8_t>(message.begin(), message.end()));
  }

  bool TlsRequired() const { return tls_ && tls_->mode() == TlsMode::kRequire && !stream_.tls(); }

  asio::awaitable<Status> StartTls() {
    if (!tls_) co_return co_await ReplyError(kRepErrUnsup, "TLS is not enabled on this server");
    if (!payload_.empty()) co_return co_await ReplyError(kRepErrInvalid, "STARTTLS takes no data");
    if (stream_.tls()) co_return co_await ReplyError(kRepErrInvalid, "TLS is already on");
    DST_CO_RETURN_IF_ERROR(co_await Reply(kRepAck, {}));
    DST_CO_RETURN_IF_ERROR(co_await stream_.StartTls(tls_->context()));
    *out_ = Negotiated{};  // options agreed in plain text may have been tampered with
    out_->tls = true;
    LOG_DEBUG("handshake: TLS started (%s)", stream_.PeerIdentity().c_str());
    co_return Status::Ok();
  }

  // The volume `name` names, or a snapshot of one (VOLUME@POINT), taken on the home loop; the
  // message for the client otherwise.
  asio::awaitable<Status> Resolve(const std::string& name, ExportView* view) const {
    Status status;
    co_await RunOn(home_, [&] { status = ResolveAtHome(name, view); });
    co_return status;
  }
  Status ResolveAtHome(const std::string& name, ExportView* view) const {
    view->volume = registry_.Find(name);
    if (!view->volume) {
      if (name.find('@') == std::string::npos)
        return Status::Error(ENOENT, "unknown export '" + name + "'");
      const Status s = registry_.FindSnapshot(name, &view->volume, &view->snapshot);
      if (s.err() == ENOENT) return s;
      if (!s.ok()) return Status::Error(s.err(), "export '" + name + "': " + s.message());
    }
    view->CopyFacts();
    if (view->snapshot && home_) {
      // A snapshot pins its point in the staged volume: it is let go on the home loop too.
      std::shared_ptr<volume::BlockDevice> snapshot = std::move(view->snapshot);
      volume::BlockDevice* device = snapshot.get();
      view->snapshot = std::shared_ptr<volume::BlockDevice>(
          device, [snapshot = std::move(snapshot), home = home_](volume::BlockDevice*) mutable {
            asio::post(home, [snapshot = std::move(snapshot)]() mutable { snapshot.reset(); });
          });
    }
    return Status::Ok();
  }

  asio::awaitable<Status> ExportName(bool* done) {
    const std::string name(payload_.begin(), payload_.end());
    ExportView view;
    // The spec leaves no error reply for EXPORT_NAME: unknown names hang up.
    DST_CO_RETURN_IF_ERROR(co_await Resolve(name, &view));
    out_->transmission_flags = TransmissionFlags(view.caps, out_->structured_replies);
    std::vector<uint8_t> reply;
    AppendBE64(reply, view.size);
    AppendBE16(reply, out_->transmission_flags);
    if (!(client_flags_ & kClientFlagNoZeroes)) reply.resize(reply.size() + kExportNameZeroPadding);
    out_->exported = std::move(view);
    *done = true;
    co_return co_await stream_.WriteAll(asio::buffer(reply), "export name reply");
  }

  asio::awaitable<Status> List() {
    if (!payload_.empty()) co_return co_await ReplyError(kRepErrInvalid, "LIST takes no data");
    std::vector<std::vector<uint8_t>> entries;
    co_await RunOn(home_, [&] {
      for (const volume::BlockDevice* vol : registry_.volumes()) {
        if (registry_.Withdrawn(vol)) continue;
        std::vector<uint8_t>& entry = entries.emplace_back();
        AppendBE32(entry, static_cast<uint32_t>(vol->name().size()));
        AppendString(entry, vol->name());
        AppendString(entry, vol->description());
      }
    });
    for (const std::vector<uint8_t>& entry : entries)
      DST_CO_RETURN_IF_ERROR(co_await Reply(kRepServer, entry));
    co_return co_await Reply(kRepAck, {});
  }

  asio::awaitable<Status> StructuredReply() {
    if (!payload_.empty())
      co_return co_await ReplyError(kRepErrInvalid, "STRUCTURED_REPLY takes no data");
    if (out_->structured_replies)
      co_return co_await ReplyError(kRepErrInvalid, "structured replies already negotiated");
    out_->structured_replies = true;
    co_return co_await Reply(kRepAck, {});
  }

  asio::awaitable<Status> InfoOrGo(bool go, bool* done) {
    PayloadReader in(payload_);
    uint32_t name_length;
    std::string name;
    uint16_t request_count;
    std::vector<uint16_t> requests;
    bool valid = in.U32(&name_length) && in.String(name_length, &name) && in.U16(&request_count);
    for (uint16_t i = 0; valid && i < request_count; ++i) {
      uint16_t type;
      valid = in.U16(&type);
      requests.push_back(type);
    }
    if (!valid || !in.AtEnd()) co_return co_await ReplyError(kRepErrInvalid, "malformed request");
    ExportView view;
    const Status found = co_await Resolve(name, &view);
    if (!found.ok()) {
      if (found.err() != ENOENT) LOG_INFO("handshake: %s", found.message().c_str());
      co_return co_await ReplyError(kRepErrUnknown, found.message());
    }
    DST_CO_RETURN_IF_ERROR(co_await SendInfo(view, name, requests));
    DST_CO_RETURN_IF_ERROR(co_await Reply(kRepAck, {}));
    if (go) {
      out_->transmission_flags = TransmissionFlags(view.caps, out_->structured_replies);
      out_->exported = std::move(view);
      *done = true;
    }
    co_return Status::Ok();
  }

  asio::awaitable<Status> SendInfo(const ExportView& vol, const std::string& name_asked,
                                   const std::vector<uint16_t>& requests) {
    std::vector<uint8_t> info;
    AppendBE16(info, kInfoExport);
    AppendBE64(info, vol.size);
    AppendBE16(info, TransmissionFlags(vol.caps, out_->structured_replies));
    DST_CO_RETURN_IF_ERROR(co_await Reply(kRepInfo, info));
    for (uint16_t type : requests) {
      info.clear();
      AppendBE16(info, type);
      if (type == kInfoName && name_asked != vol.name)
        AppendString(info, vol.name);
      else if (type == kInfoDescription && !vol.description.empty())
        AppendString(info, vol.description);
      else
        continue;
      DST_CO_RETURN_IF_ERROR(co_await Reply(kRepInfo, info));
    }
    // Block sizes go to every client (libnbd takes them even unasked). One
    // that asked for them in its GO must honour them (the spec), so it gets
    // the members' minimum and never makes the volume merge partial blocks;
    // one that did not ask gets the spec's default minimum of 1, and the
    // volume merges partial blocks for its unaligned requests (volume.h).
    const bool asked =
        std::find(requests.begin(), requests.end(), kInfoBlockSize) != requests.end();
    const volume::VolumeCapabilities& caps = vol.caps;
    info.clear();
    AppendBE16(info, kInfoBlockSize);
    AppendBE32(info, asked ? caps.min_block : 1);
    AppendBE32(info, caps.preferred_block);
    AppendBE32(info, caps.max_payload);
    co_return co_await Reply(kRepInfo, info);
  }

  asio::awaitable<Status> MetaContext(bool set) {
    PayloadReader in(payload_);
    uint32_t name_length, query_count;
    std::string name;
    std::vector<std::string> queries;
    bool valid = in.U32(&name_length) && in.String(name_length, &name) && in.U32(&query_count) &&
                 query_count <= payload_.size() / 4;
    for (uint32_t i = 0; valid && i < query_count; ++i) {
      uint32_t length;
      std::string query;
      valid = in.U32(&length) && in.String(length, &query);
      queries.push_back(std::move(query));
    }
    if (!valid || !in.AtEnd()) co_return co_await ReplyError(kRepErrInvalid, "malformed request");
    if (set && !out_->structured_replies)
      co_return co_await ReplyError(kRepErrInvalid, "SET_META_CONTEXT needs structured replies");
    ExportView view;
    if (const Status found = co_await Resolve(name, &view); !found.ok())
      co_return co_await ReplyError(kRepErrUnknown, found.message());
    bool selected = false;
    for (const std::string& q : queries) {
      if (q == kBaseAllocationContext || (!set && q == "base:")) selected = true;
    }
    if (queries.empty() && !set) selected = true;  // LIST with no query lists all
    if (selected) {
      std::vector<uint8_t> context;
      AppendBE32(context, kBaseAllocationId);
      AppendString(context, kBaseAllocationContext);
      DST_CO_RETURN_IF_ERROR(co_await Reply(kRepMetaContext, context));
    }
    if (set) out_->base_allocation = selected;
    co_return co_await Reply(kRepAck, {});
  }

  ClientStream& stream_;
  const ExportRegistry& registry_;
  ServerTls* tls_;  // nullptr: TLS off
  Negotiated* out_;
  const asio::any_io_executor home_;  // empty: the registry is on this loop
  uint32_t client_flags_ = 0;
  uint32_t option_ = 0;
  std::vector<uint8_t> payload_;
};

}  // namespace

uint16_t TransmissionFlags(const volume::VolumeCapabilities& caps, bool structured_replies) {
  // FLUSH reaches every member and completes after all of them, so it is a
  // barrier across connections: multi-conn is safe to advertise.
  uint16_t flags =
      kFlagHasFlags | kFlagSendFlush | kFlagSendFua | kFlagSendWriteZeroes | kFlagCanMultiConn;
  if (caps.read_only) flags |= kFlagReadOnly;
  if (caps.can_trim) flags |= kFlagSendTrim;
  if (caps.can_fast_zero) flags |= kFlagSendFastZero;
  if (caps.can_cache) flags |= kFlagSendCache;
  // Reads are always answered in one chunk, so "don't fragment" holds.
  if (structured_replies) flags |= kFlagSendDf;
  return flags;
}

asio::awaitable<Status> Negotiate(ClientStream& stream, const ExportRegistry& registry,
                                  ServerTls* tls, Negotiated* out, asio::any_io_executor home) {
  Handshake handshake(stream, registry, tls, out, std::move(home));
  co_return co_await handshake.Run();
}

}  // namespace dst::server
