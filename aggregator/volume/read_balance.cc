#include "aggregator/volume/read_balance.h"

#include <algorithm>
#include <limits>

namespace dst::volume {

namespace {

// Rule 1: a resyncing or rebuilding copy serves only below its cursor.
bool Eligible(const CopyLoad& copy, const ReadRequest& request) {
  if (!copy.readable) return false;
  if (!copy.serve_below) return true;
  return request.offset <= *copy.serve_below &&
         request.length <= *copy.serve_below - request.offset;
}

bool Tried(std::span<const uint32_t> tried, uint32_t copy) {
  return std::find(tried.begin(), tried.end(), copy) != tried.end();
}

// The copies that may serve: eligible, not tried, and (rule 2) write-mostly only when nothing
// else is. Returned as a predicate over copy indexes.
class Candidates {
 public:
  Candidates(std::span<const CopyLoad> copies, const ReadRequest& request,
             std::span<const uint32_t> tried)
      : copies_(copies), request_(request), tried_(tried) {
    bool any_plain = false;
    for (uint32_t i = 0; i < copies_.size(); ++i)
      any_plain = any_plain || (Usable(i) && !copies_[i].write_mostly);
    write_mostly_ = !any_plain;
  }

  bool Contains(uint32_t i) const {
    return i < copies_.size() && Usable(i) && copies_[i].write_mostly == write_mostly_;
  }

  // Rule 4: the fewest bytes in flight; max() when there is no candidate.
  uint64_t LeastInFlight() const {
    uint64_t least = std::numeric_limits<uint64_t>::max();
    for (uint32_t i = 0; i < copies_.size(); ++i)
      if (Contains(i)) least = std::min(least, copies_[i].bytes_in_flight);
    return least;
  }

  // Rules 4 and 5: among the least busy, the one the request's 2 MiB area falls to.
  std::optional<uint32_t> LeastBusy() const {
    const uint64_t least = LeastInFlight();
    uint32_t tied = 0;
    for (uint32_t i = 0; i < copies_.size(); ++i)
      if (Contains(i) && copies_[i].bytes_in_flight == least) ++tied;
    if (tied == 0) return std::nullopt;
    uint64_t pick = (request_.offset >> kSpreadShift) % tied;
    for (uint32_t i = 0; i < copies_.size(); ++i) {
      if (!Contains(i) || copies_[i].bytes_in_flight != least) continue;
      if (pick-- == 0) return i;
    }
    return std::nullopt;  // not reached: `tied` copies matched above
  }

 private:
  bool Usable(uint32_t i) const { return Eligible(copies_[i], request_) && !Tried(tried_, i); }

  std::span<const CopyLoad> copies_;
  const ReadRequest& request_;
  std::span<const uint32_t> tried_;
  bool write_mostly_ = false;
};

bool Continues(const ReadStream& stream, const ReadRequest& request) {
  return stream.copy && request.offset == stream.end && request.offset >= stream.start &&
         request.offset - stream.start < kSequentialSpan;
}

// Rule 3: the stream's copy, unless it is much busier than the least busy candidate.
bool KeepStream(std::span<const CopyLoad> copies, const Candidates& candidates,
                const ReadStream& stream) {
  const uint32_t copy = *stream.copy;
  if (!candidates.Contains(copy)) return false;
  return copies[copy].bytes_in_flight - candidates.LeastInFlight() <= kBusierSlack;
}

}  // namespace

std::optional<uint32_t> ChooseCopy(std::span<const CopyLoad> copies, const ReadRequest& request,
                                   const ReadStream& stream) {
  const Candidates candidates(copies, request, {});
  if (Continues(stream, request) && KeepStream(copies, candidates, stream)) return *stream.copy;
  return candidates.LeastBusy();
}

ReadStream AdvanceStream(const ReadStream& stream, const ReadRequest& request, uint32_t chosen) {
  const uint64_t end = request.offset + request.length;
  if (Continues(stream, request) && stream.copy == chosen) return {chosen, stream.start, end};
  return {chosen, request.offset, end};
}

std::optional<uint32_t> NextCopy(std::span<const CopyLoad> copies, const ReadRequest& request,
                                 std::span<const uint32_t> tried) {
  return Candidates(copies, request, tried).LeastBusy();
}

}  // namespace dst::volume
