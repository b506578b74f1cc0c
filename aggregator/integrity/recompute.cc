#include "aggregator/integrity/recompute.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <memory>
#include <optional>
#include <utility>

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

  // Pins the slice's table pages and gives each block the entry of what it holds.
  void Apply(const RecomputeSlice& slice, const Buffer& buffer) {
    auto pages = std::make_shared<std::vector<PageKey>>();
    for (uint64_t at = 0; at < slice.length; at += in_.block_size) {
      const PageKey key = in_.table->KeyOf(slice.member, (slice.offset + at) / in_.block_size);
      if (std::find(pages->begin(), pages->end(), key) == pages->end()) pages->push_back(key);
    }
    in_.table->Pin(*pages, [self = shared_from_this(), slice, buffer, pages](int err) {
      if (self->in_.owner.expired()) return;
      if (err == 0) self->WriteEntries(slice, *buffer, *pages);
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
