#include "aggregator/integrity/recompute.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <utility>

#include "common/join.h"
#include "common/log.h"
#include "common/progress.h"
#include "common/units.h"

namespace dst::integrity {

namespace {

// Dirty regions are read in slices of this size, a few at a time.
constexpr uint64_t kSliceBytes = uint64_t{4} << 20;
constexpr size_t kParallelSlices = 4;
constexpr auto kProgressInterval = std::chrono::seconds(2);

bool IsZero(const uint8_t* data, size_t length) {
  return length == 0 || (data[0] == 0 && std::memcmp(data, data + 1, length - 1) == 0);
}

// One recomputation in progress: kParallelSlices slices in flight until the
// plan runs out or a slice fails. Held by the callbacks of its slices.
class Recomputation : public std::enable_shared_from_this<Recomputation> {
 public:
  Recomputation(RecomputeInputs in, RecomputePlan plan, std::function<void(int)> done)
      : in_(std::move(in)), plan_(std::move(plan)), done_(std::move(done)) {
    progress_.emplace("volume " + in_.volume + ": recomputing checksums", plan_.bytes,
                      Progress::StderrIsTerminal(), kProgressInterval);
  }

  void Start() {
    started_ = std::chrono::steady_clock::now();
    in_.counters->recomputed_regions = plan_.regions;
    for (size_t i = 0; i < kParallelSlices; ++i)
      Next();
    if (plan_.slices.empty()) Finish();
  }

 private:
  using Buffer = std::shared_ptr<std::vector<uint8_t>>;

  void Next() {
    if (next_ >= plan_.slices.size()) return;
    const RecomputeSlice slice = plan_.slices[next_++];
    ++running_;
    if (in_.copies) {
      std::vector<uint32_t> copies = in_.copies->current(slice.member);
      if (copies.size() > 1) return ReadCopies(slice, std::move(copies));
    }
    auto buffer = std::make_shared<std::vector<uint8_t>>(slice.length);
    auto io = std::make_shared<volume::MemberIo>();
    io->op = volume::MemberOp::kRead;
    io->offset = slice.offset;
    io->length = slice.length;
    io->data = buffer->data();
    io->done = [self = shared_from_this(), slice, buffer](int err) {
      if (self->in_.owner.expired()) return;
      if (err != 0) return self->SliceDone(slice, err);
      self->Apply(slice, buffer);
    };
    in_.data_areas[slice.member]->Submit(std::move(io));
  }

  // Entries taken from a copy's own table, by block of the slice (authenticated volumes).
  using Adopted = std::shared_ptr<std::map<uint64_t, std::vector<uint8_t>>>;

  // Pins the slice's table pages and gives each block the entry of what it holds.
  void Apply(const RecomputeSlice& slice, const Buffer& buffer, Adopted adopted = nullptr) {
    auto pages = std::make_shared<std::vector<PageKey>>();
    for (uint64_t at = 0; at < slice.length; at += in_.block_size) {
      const PageKey key = in_.table->KeyOf(slice.member, (slice.offset + at) / in_.block_size);
      if (std::find(pages->begin(), pages->end(), key) == pages->end()) pages->push_back(key);
    }
    in_.table->Pin(*pages, [self = shared_from_this(), slice, buffer, pages, adopted](int err) {
      if (self->in_.owner.expired()) return;
      if (err == 0 && self->in_.authenticated) self->VerifyEntries(slice, *buffer, *pages, adopted);
      if (err == 0 && !self->in_.authenticated) self->WriteEntries(slice, *buffer, *pages);
      self->in_.table->Unpin(*pages);
      self->SliceDone(slice, err);
    });
  }

  void WriteEntries(const RecomputeSlice& slice, const std::vector<uint8_t>& data,
                    const std::vector<PageKey>& pages) {
    const uint32_t bs = in_.block_size;
    for (uint64_t at = 0; at < slice.length; at += bs) {
      const uint64_t block = (slice.offset + at) / bs;  // of the member's data area
      const std::span<uint8_t> entry = in_.table->Entry(slice.member, block);
      if (IsZero(data.data() + at, bs)) {
        std::fill(entry.begin(), entry.end(), 0);
        continue;
      }
      const uint64_t volume_block = in_.layout->VolumeOffset(slice.member, block * bs) / bs;
      const Digest digest = in_.checksum(volume_block, data.data() + at);
      std::memcpy(entry.data(), digest.bytes.data(), entry.size());
    }
    for (const PageKey& key : pages)
      in_.table->MarkDirty(key);
  }

  // Authenticated volumes: entries are kept, never computed; what does not verify is reported.
  void VerifyEntries(const RecomputeSlice& slice, const std::vector<uint8_t>& data,
                     const std::vector<PageKey>& pages, const Adopted& adopted) {
    const uint32_t bs = in_.block_size;
    uint64_t unverified = 0, first = 0;
    bool changed = false;
    for (uint64_t at = 0; at < slice.length; at += bs) {
      const uint64_t block = (slice.offset + at) / bs;  // of the member's data area
      const std::span<uint8_t> entry = in_.table->Entry(slice.member, block);
      if (adopted)
        if (auto a = adopted->find(at / bs); a != adopted->end()) {
          changed = changed || !std::equal(entry.begin(), entry.end(), a->second.begin());
          std::copy(a->second.begin(), a->second.end(), entry.begin());
        }
      if (IsZero(entry.data(), entry.size())) continue;
      const uint64_t volume_block = in_.layout->VolumeOffset(slice.member, block * bs) / bs;
      const Digest digest = in_.checksum(volume_block, data.data() + at);
      if (digest.Matches(entry)) continue;
      if (unverified++ == 0) first = slice.offset + at;
    }
    if (changed)
      for (const PageKey& key : pages)
        in_.table->MarkDirty(key);
    if (unverified == 0) return;
    in_.counters->recovery_unverified += unverified;
    LOG_ERROR(
        "volume %s: %llu blocks of member %u from data offset %llu do not verify after an unclean "
        "stop; keyed entries are never recomputed, so they read as EIO until rewritten",
        in_.volume.c_str(), static_cast<unsigned long long>(unverified), slice.member,
        static_cast<unsigned long long>(first));
  }

  // ---- Copies of a set (mirror, raid10).

  // One slice as every current copy holds it.
  struct CopySlice {
    RecomputeSlice slice;
    std::vector<uint32_t> copies;
    std::vector<std::vector<uint8_t>> data;  // per copy
    std::vector<int> errors;                 // per copy
    std::vector<uint64_t> differing;         // blocks of the slice where the copies differ
    // Per copy: member offset of a table page -> its bytes (empty if unread).
    std::vector<std::map<uint64_t, std::vector<uint8_t>>> pages;
  };
  // What one region's reconciliation did, for its log line.
  struct RegionReport {
    uint64_t differing = 0;
    uint64_t by_entry = 0;        // winners chosen by their table entry
    std::vector<uint64_t> kept;   // per copy: blocks whose data was taken
    std::vector<uint64_t> wrote;  // per copy: blocks rewritten
  };

  void ReadCopies(const RecomputeSlice& slice, std::vector<uint32_t> copies) {
    auto cs = std::make_shared<CopySlice>();
    cs->slice = slice;
    cs->copies = std::move(copies);
    cs->data.assign(cs->copies.size(), std::vector<uint8_t>(slice.length));
    cs->errors.assign(cs->copies.size(), 0);
    cs->pages.resize(cs->copies.size());
    auto join = MakeJoin([self = shared_from_this(), cs](int) {
      if (self->in_.owner.expired()) return;
      for (int err : cs->errors)
        if (err != 0) return self->SliceDone(cs->slice, err);
      self->Compare(cs);
    });
    for (size_t i = 0; i < cs->copies.size(); ++i) {
      auto io = std::make_shared<volume::MemberIo>();
      io->op = volume::MemberOp::kRead;
      io->offset = slice.offset;
      io->length = slice.length;
      io->data = cs->data[i].data();
      io->only_copy = static_cast<int32_t>(cs->copies[i]);
      io->done = [cs, i, part = Part(join)](int err) {
        cs->errors[i] = err;
        part(0);
      };
      in_.data_areas[slice.member]->Submit(std::move(io));
    }
    join->Arrive(0);
  }

  void Compare(const std::shared_ptr<CopySlice>& cs) {
    const uint32_t bs = in_.block_size;
    for (uint64_t at = 0; at < cs->slice.length; at += bs)
      for (size_t i = 1; i < cs->copies.size(); ++i)
        if (std::memcmp(cs->data[0].data() + at, cs->data[i].data() + at, bs) != 0) {
          cs->differing.push_back(at / bs);
          break;
        }
    if (cs->differing.empty()) {
      auto buffer = std::make_shared<std::vector<uint8_t>>(std::move(cs->data[0]));
      return Apply(cs->slice, buffer);
    }
    ReadTablePages(cs);
  }

  // The table pages of the differing blocks, from each copy. A page that
  // cannot be read leaves that copy's entries unknown: it does not win by
  // its entry.
  void ReadTablePages(const std::shared_ptr<CopySlice>& cs) {
    const MemberGeometry& g = in_.copies->geometries[cs->slice.member];
    std::vector<uint64_t> offsets;
    for (uint64_t b : cs->differing) {
      const uint64_t page = LocateTableEntry(g, cs->slice.offset / in_.block_size + b).page_offset;
      if (std::find(offsets.begin(), offsets.end(), page) == offsets.end()) offsets.push_back(page);
    }
    auto join = MakeJoin([self = shared_from_this(), cs](int) {
      if (!self->in_.owner.expired()) self->Reconcile(cs);
    });
    for (size_t i = 0; i < cs->copies.size(); ++i) {
      for (uint64_t offset : offsets) {
        auto bytes = std::make_shared<std::vector<uint8_t>>(kMetadataPageSize);
        auto io = std::make_shared<volume::MemberIo>();
        io->op = volume::MemberOp::kRead;
        io->offset = offset;
        io->length = kMetadataPageSize;
        io->data = bytes->data();
        io->only_copy = static_cast<int32_t>(cs->copies[i]);
        io->done = [cs, i, offset, bytes, part = Part(join)](int err) {
          if (err == 0) cs->pages[i][offset] = std::move(*bytes);
          part(0);
        };
        in_.copies->targets[cs->slice.member]->Submit(std::move(io));
      }
    }
    join->Arrive(0);
  }

  // Copy i's own durable entry of block b (read by ReadTablePages).
  std::vector<uint8_t> OwnEntry(const CopySlice& cs, size_t i, uint64_t b) {
    const uint64_t block = cs.slice.offset / in_.block_size + b;
    const TableEntryLocation where =
        LocateTableEntry(in_.copies->geometries[cs.slice.member], block);
    const std::vector<uint8_t>& page = cs.pages[i].at(where.page_offset);
    return {page.begin() + where.offset_in_page, page.begin() + where.offset_in_page + where.size};
  }

  // Whether copy i's block b matches that copy's own table entry.
  bool MatchesOwnEntry(const CopySlice& cs, size_t i, uint64_t b) {
    const uint32_t bs = in_.block_size;
    const uint64_t block = cs.slice.offset / bs + b;
    const TableEntryLocation where =
        LocateTableEntry(in_.copies->geometries[cs.slice.member], block);
    const auto page = cs.pages[i].find(where.page_offset);
    if (page == cs.pages[i].end()) return false;
    const uint8_t* entry = page->second.data() + where.offset_in_page;
    const uint8_t* data = cs.data[i].data() + b * bs;
    if (IsZero(entry, where.size)) return IsZero(data, bs);  // unwritten: zeros
    const uint64_t volume_block = in_.layout->VolumeOffset(cs.slice.member, block * bs) / bs;
    const Digest digest = in_.checksum(volume_block, data);
    return digest.Matches({entry, where.size});
  }

  // Picks each differing block's winner, writes it to the copies that differ,
  // then recomputes the slice's entries from the result.
  void Reconcile(const std::shared_ptr<CopySlice>& cs) {
    const uint32_t bs = in_.block_size;
    const size_t n = cs->copies.size();
    auto result = std::make_shared<std::vector<uint8_t>>(cs->data[0]);
    auto adopted = in_.authenticated ? std::make_shared<Adopted::element_type>() : nullptr;
    const uint64_t region = cs->slice.offset / in_.copies->region_size;
    RegionReport& report = reports_[{cs->slice.member, region}];
    report.kept.resize(n);
    report.wrote.resize(n);
    for (uint64_t b : cs->differing) {
      size_t winner = 0;
      bool by_entry = false;
      for (size_t i = 0; i < n && !by_entry; ++i)
        if (MatchesOwnEntry(*cs, i, b)) {
          winner = i;
          by_entry = true;
        }
      std::memcpy(result->data() + b * bs, cs->data[winner].data() + b * bs, bs);
      if (adopted && by_entry) (*adopted)[b] = OwnEntry(*cs, winner, b);
      ++report.differing;
      report.by_entry += by_entry;
      ++report.kept[winner];
    }
    *in_.copies->mismatches += cs->differing.size();
    auto join = MakeJoin([self = shared_from_this(), cs, result, adopted](int err) {
      if (self->in_.owner.expired()) return;
      if (err != 0) return self->SliceDone(cs->slice, err);
      self->Apply(cs->slice, result, adopted);
    });
    // Per copy, one write per run of blocks that differ from the result.
    for (size_t i = 0; i < n; ++i) {
      const auto differs = [&](uint64_t b) {
        return std::memcmp(cs->data[i].data() + b * bs, result->data() + b * bs, bs) != 0;
      };
      for (size_t d = 0; d < cs->differing.size();) {
        const uint64_t first = cs->differing[d];
        if (!differs(first)) {
          ++d;
          continue;
        }
        uint64_t end = first + 1;
        ++d;
        while (d < cs->differing.size() && cs->differing[d] == end && differs(end)) {
          ++end;
          ++d;
        }
        report.wrote[i] += end - first;
        auto io = std::make_shared<volume::MemberIo>();
        io->op = volume::MemberOp::kWrite;
        io->offset = cs->slice.offset + first * bs;
        io->length = (end - first) * bs;
        io->data = result->data() + first * bs;
        io->only_copy = static_cast<int32_t>(cs->copies[i]);
        io->done = Part(join);  // the join's done holds `result` alive
        in_.data_areas[cs->slice.member]->Submit(std::move(io));
      }
    }
    join->Arrive(0);
  }

  void ReportRegions() {
    for (const auto& [where, report] : reports_) {
      const auto& [member, region] = where;
      std::string copies;
      for (size_t i = 0; i < report.kept.size(); ++i) {
        const std::vector<uint32_t> current = in_.copies->current(member);
        const uint32_t copy = i < current.size() ? current[i] : static_cast<uint32_t>(i);
        copies += (copies.empty() ? "" : ", ") + in_.copies->describe(member, copy) + ": " +
                  std::to_string(report.kept[i]) + " kept, " + std::to_string(report.wrote[i]) +
                  " rewritten";
      }
      LOG_WARNING(
          "volume %s: copies of set %u differed in %llu blocks of region %llu after an unclean "
          "stop (%llu chosen by their table entry, the rest from the lowest current copy): %s",
          in_.volume.c_str(), member, static_cast<unsigned long long>(report.differing),
          static_cast<unsigned long long>(region), static_cast<unsigned long long>(report.by_entry),
          copies.c_str());
    }
  }

  void SliceDone(const RecomputeSlice& slice, int err) {
    --running_;
    if (err != 0 && error_ == 0) {
      error_ = err;
      LOG_ERROR("volume %s: recomputing checksums of member %u at data offset %llu: %s",
                in_.volume.c_str(), slice.member, static_cast<unsigned long long>(slice.offset),
                std::strerror(err));
    }
    done_bytes_ += slice.length;
    in_.counters->recomputed_bytes += slice.length;
    progress_->Update(done_bytes_);
    if (error_ == 0) Next();
    if (running_ == 0 && (error_ != 0 || next_ >= plan_.slices.size())) Finish();
  }

  void Finish() {
    progress_->Clear();
    if (in_.copies) ReportRegions();
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
    if (error_ == 0)
      LOG_INFO("volume %s: recomputed the checksums of %llu dirty regions (%s) in %.1f s",
               in_.volume.c_str(), static_cast<unsigned long long>(plan_.regions),
               FormatSize(plan_.bytes).c_str(), seconds);
    done_(error_);
  }

  RecomputeInputs in_;
  RecomputePlan plan_;
  std::function<void(int)> done_;
  size_t next_ = 0;
  size_t running_ = 0;
  int error_ = 0;
  uint64_t done_bytes_ = 0;
  std::chrono::steady_clock::time_point started_;
  std::optional<Progress> progress_;
  std::map<std::pair<uint32_t, uint64_t>, RegionReport> reports_;  // by (set, region)
};

}  // namespace

RecomputePlan PlanRecompute(const RecomputeInputs& inputs, uint64_t region_size,
                            const std::vector<std::vector<uint64_t>>& dirty) {
  RecomputePlan plan;
  for (uint32_t m = 0; m < dirty.size(); ++m) {
    const uint64_t usable = inputs.layout->member_usable_size(m);
    const uint64_t slice_size =
        std::min<uint64_t>(kSliceBytes, inputs.data_areas[m]->capabilities().max_request);
    for (uint64_t region : dirty[m]) {
      const uint64_t from = region * region_size;
      const uint64_t to = std::min(from + region_size, usable);
      if (from >= to) continue;
      ++plan.regions;
      plan.bytes += to - from;
      for (uint64_t at = from; at < to; at += slice_size)
        plan.slices.push_back({m, at, std::min(slice_size, to - at)});
    }
  }
  return plan;
}

void Recompute(RecomputeInputs inputs, RecomputePlan plan, std::function<void(int err)> done) {
  std::make_shared<Recomputation>(std::move(inputs), std::move(plan), std::move(done))->Start();
}

}  // namespace dst::integrity
