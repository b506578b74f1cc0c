// Join: a fan-out of asynchronous parts that completes once. Each part takes
// a callback from Part(); `done` runs once, with the first error any part
// reported, when the starter's own reference is dropped with Arrive(0) and
// every part has arrived. The starter's reference keeps a part that completes
// at once from finishing the whole while parts are still being added.
//
// Threading: the event-loop thread only.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <utility>

namespace dst::integrity {

struct Join {
  explicit Join(std::function<void(int)> d) : done(std::move(d)) {}

  void Arrive(int err) {
    if (err != 0 && error == 0) error = err;
    if (--outstanding == 0) done(error);
  }

  size_t outstanding = 1;  // the starter's reference
  int error = 0;
  std::function<void(int)> done;
};

inline std::shared_ptr<Join> MakeJoin(std::function<void(int)> done) {
  return std::make_shared<Join>(std::move(done));
}

// A callback for one more part; it holds the join alive until it runs.
inline std::function<void(int)> Part(const std::shared_ptr<Join>& join) {
  ++join->outstanding;
  return [join](int err) { join->Arrive(err); };
}

}  // namespace dst::integrity
