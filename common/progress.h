// Progress of a long operation (zeroing members at create, recomputing
// checksums at assembly): on a terminal, a bar with rate and ETA redrawn in
// place on stderr; otherwise (a pipe, a journal, JSON logs) an info log line
// every `interval`. Both end with one summary line from Finish().
//
// Threading: one thread; not shared.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace dst {

class Progress {
 public:
  using Clock = std::chrono::steady_clock;

  // `what` names the operation: "volume v: recomputing checksums".
  Progress(std::string what, uint64_t total, bool terminal,
           std::chrono::milliseconds interval = std::chrono::seconds(2));
  // True when stderr is a terminal and logs are text: draw a bar.
  static bool StderrIsTerminal();

  // `done` of `total` bytes so far; draws or logs at most every interval
  // (a bar: ten times a second).
  void Update(uint64_t done);
  // The last line, "what: 2 GiB in 3.1 s (660 MiB/s)", if any progress was
  // shown: an operation that was over before the first line stays quiet.
  void Finish();
  // Only erases the bar, for a caller that logs its own summary.
  void Clear();

  // "what: 45% (1.2 GiB of 2.6 GiB) at 310 MiB/s, ETA 5 s": pure, for tests.
  static std::string Line(const std::string& what, uint64_t done, uint64_t total, double seconds);
  // The same at a rate measured elsewhere (background jobs that resume, whose
  // rate is not done / elapsed): ETA = what is left at that rate. A negative
  // rate is not known yet: "at -", no ETA.
  static std::string LineAtRate(const std::string& what, uint64_t done, uint64_t total,
                                double bytes_per_second);

 private:
  std::string what_;
  uint64_t total_;
  bool terminal_;
  std::chrono::milliseconds interval_;
  Clock::time_point started_;
  Clock::time_point last_shown_;
  uint64_t done_ = 0;
  bool drawn_ = false;  // a bar is on the terminal's current line
  bool shown_ = false;  // anything was drawn or logged
};

}  // namespace dst
