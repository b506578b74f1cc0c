#include "aggregator/stagelog/log_index.h"

#include <algorithm>
#include <string>

namespace dst::stagelog {

namespace {

struct Range {
  uint64_t start;
  uint64_t end;
};

}  // namespace

ReadPiece LogIndex::FromRecord(uint64_t sequence, uint64_t offset, uint64_t length) const {
  const Record& r = records_.at(sequence);
  ReadPiece p;
  p.offset = offset;
  p.length = length;
  p.from_log = true;
  p.sequence = sequence;
  p.kind = r.kind;
  p.position = r.position;
  p.offset_in_record = offset - r.volume_offset;
  return p;
}

ReadPiece LogIndex::FromMembers(uint64_t offset, uint64_t length) {
  ReadPiece p;
  p.offset = offset;
  p.length = length;
  return p;
}

void LogIndex::Add(const ReplayedRecord& record) {
  const RecordHeader& h = record.header;
  last_ = std::max(last_, h.sequence);
  if (h.kind == RecordKind::kPadding) return;
  records_[h.sequence] = {h.kind, h.volume_offset, h.length, record.position};
  const uint64_t start = h.volume_offset;
  const uint64_t end = h.volume_offset + h.length;
  auto it = extents_.upper_bound(start);
  if (it != extents_.begin() && std::prev(it)->second.end > start) --it;
  // Every extent overlapping [start, end): keep the parts outside it.
  while (it != extents_.end() && it->first < end) {
    const uint64_t s = it->first;
    const Extent e = it->second;
    it = extents_.erase(it);
    if (s < start) extents_[s] = {start, e.sequence};
    if (e.end > end) extents_[end] = {e.end, e.sequence};
  }
  extents_[start] = {end, h.sequence};
}

std::vector<ReadPiece> LogIndex::Lookup(uint64_t offset, uint64_t length) const {
  std::vector<ReadPiece> out;
  const uint64_t end = offset + length;
  uint64_t at = offset;
  auto it = extents_.upper_bound(offset);
  if (it != extents_.begin() && std::prev(it)->second.end > offset) --it;
  for (; it != extents_.end() && it->first < end; ++it) {
    const uint64_t s = std::max(it->first, offset);
    const uint64_t e = std::min(it->second.end, end);
    if (s > at) out.push_back(FromMembers(at, s - at));
    out.push_back(FromRecord(it->second.sequence, s, e - s));
    at = e;
  }
  if (at < end) out.push_back(FromMembers(at, end - at));
  return out;
}

Status LogIndex::CheckPoint(uint64_t sequence) const {
  if (sequence < destaged_) {
    return Status::Invalid("sequence " + std::to_string(sequence) +
                           " is older than the destaged sequence " + std::to_string(destaged_) +
                           ": the members no longer hold the volume as of it");
  }
  if (sequence > last_) {
    return Status::Invalid("sequence " + std::to_string(sequence) +
                           " is newer than the log's last record " + std::to_string(last_));
  }
  return Status::Ok();
}

template <typename It>
std::vector<ReadPiece> LogIndex::Resolve(uint64_t offset, uint64_t length, It first,
                                         It last) const {
  std::vector<Range> gaps = {{offset, offset + length}};
  std::vector<ReadPiece> pieces;
  for (It it = first; it != last && !gaps.empty(); ++it) {
    const Record& r = it->second;
    const uint64_t rs = r.volume_offset;
    const uint64_t re = r.volume_offset + r.length;
    std::vector<Range> left;
    for (const Range& g : gaps) {
      const uint64_t s = std::max(g.start, rs);
      const uint64_t e = std::min(g.end, re);
      if (s >= e) {
        left.push_back(g);
        continue;
      }
      pieces.push_back(FromRecord(it->first, s, e - s));
      if (g.start < s) left.push_back({g.start, s});
      if (e < g.end) left.push_back({e, g.end});
    }
    gaps = std::move(left);
  }
  for (const Range& g : gaps)
    pieces.push_back(FromMembers(g.start, g.end - g.start));
  std::sort(pieces.begin(), pieces.end(),
            [](const ReadPiece& a, const ReadPiece& b) { return a.offset < b.offset; });
  return pieces;
}

Status LogIndex::LookupAsOf(uint64_t offset, uint64_t length, uint64_t sequence,
                            std::vector<ReadPiece>* out) const {
  DST_RETURN_IF_ERROR(CheckPoint(sequence));
  // Newest first, each record takes what no newer one (<= sequence) took.
  *out = Resolve(offset, length, std::make_reverse_iterator(records_.upper_bound(sequence)),
                 records_.rend());
  return Status::Ok();
}

Status LogIndex::LookupBeforeImages(uint64_t offset, uint64_t length, uint64_t sequence,
                                    std::vector<ReadPiece>* out) const {
  DST_RETURN_IF_ERROR(CheckPoint(sequence));
  // Oldest first after `sequence`: its before-image is the range as it was then.
  *out = Resolve(offset, length, records_.upper_bound(sequence), records_.end());
  return Status::Ok();
}

bool LogIndex::CoveredAfter(uint64_t offset, uint64_t length, uint64_t sequence) const {
  const uint64_t end = offset + length;
  for (auto it = records_.upper_bound(sequence); it != records_.end(); ++it) {
    const Record& r = it->second;
    if (r.volume_offset < end && offset < r.volume_offset + r.length) return true;
  }
  return false;
}

void LogIndex::SetDestaged(uint64_t sequence) {
  destaged_ = std::max(destaged_, sequence);
}

void LogIndex::DropThrough(uint64_t sequence) {
  sequence = std::min(sequence, destaged_);
  records_.erase(records_.begin(), records_.upper_bound(sequence));
  for (auto it = extents_.begin(); it != extents_.end();) {
    it = it->second.sequence <= sequence ? extents_.erase(it) : std::next(it);
  }
}

}  // namespace dst::stagelog
