// Join: the one fan-in of the code base. A request that starts several
// asynchronous parts (member I/Os, table page reads, superblock writes,
// connections) completes once, with the first error any part reported,
// after every part has arrived.
//
//   auto join = MakeJoin([done](int err) { done(err); });
//   for (...) StartPart(..., Part(join));   // one callback per part
//   join->Arrive(0);                        // the starter's own reference
//
// The starter's reference keeps a part that completes at once from
// finishing the whole while parts are still being added; `done` runs inside
// the last Arrive(), so a starter that must not be re-entered arrives last.
// A Join with its callbacks in one allocation, for hot paths that hold it
// by value in their own request object, is BasicJoin<F> with any callable F.
//
// Threading: one thread (the event loop that runs the parts' callbacks).
#pragma once

#include <cstddef>
#include <memory>
#include <utility>

#include "common/callback.h"
#include "common/object_pool.h"

namespace dst {

template <typename Done>
class BasicJoin {
 public:
  explicit BasicJoin(Done done) : done_(std::move(done)) {}

  // One more part to wait for; call before starting it.
  void Add(size_t parts = 1) { outstanding_ += parts; }
  // A part (or the starter) is done; err 0 for success. The first error wins.
  void Arrive(int err) {
    if (err != 0 && error_ == 0) error_ = err;
    if (--outstanding_ == 0) done_(error_);
  }
  size_t outstanding() const { return outstanding_; }
  int error() const { return error_; }

 private:
  size_t outstanding_ = 1;  // the starter's reference
  int error_ = 0;
  Done done_;
};

// From the object pool, with callbacks in place (common/callback.h): a join and its parts
// allocate nothing at a steady load.
using Join = BasicJoin<Callback<void(int)>>;

inline std::shared_ptr<Join> MakeJoin(Callback<void(int)> done) {
  return MakePooled<Join>(std::move(done));
}

// A callback for one more part; it holds the join alive until it runs.
inline Callback<void(int)> Part(const std::shared_ptr<Join>& join) {
  join->Add();
  return [join](int err) { join->Arrive(err); };
}

}  // namespace dst
