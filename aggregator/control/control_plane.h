// The control plane of a running server: the status report (status_report.h) built from what the
// server owns (runtime.h), answered on the control socket (`dst-aggregator status`) and over
// HTTP as Prometheus metrics, and logged as stats lines on SIGUSR1 and every --stats-interval.
// Volumes report their state through BlockDevice::State(); nothing here knows a volume's type.
//
// Threading: the event loop's thread; every handler runs there.
#pragma once

#include <chrono>
#include <functional>
#include <string>

#include <asio.hpp>

#include "aggregator/control/runtime.h"
#include "aggregator/control/status_report.h"
#include "common/status.h"

namespace dst::control {

StatusReport BuildReport(const Server& server);

// The control socket's commands: "status" (a table), "status json", "reload" (Server::reload),
// and those that act (control_commands.h, volume_commands.h); an error line else. `answer` hears it
// once (member add: later).
void AnswerControl(Server& server, const std::string& request,
                   std::function<void(std::string)> answer);
// An HTTP response: GET /metrics in the Prometheus text format, 404 or 405 otherwise.
std::string AnswerMetrics(const Server& server, const std::string& request);

// The control socket: `option` is --control as given: "" for the default path, "none" for none.
// The default path is given up with a warning when it cannot be used (held by another
// aggregator, or its private directory is not ours); a path asked for is not.
Status StartControl(Server& server, const std::string& option);
// Metrics on HOST:PORT; nothing when `host_port` is empty.
Status StartMetrics(Server& server, const std::string& host_port);

// A stats line per member and per checksummed volume, on every SIGUSR1 and (unless 0) every
// `interval`, until the io_context stops. Owns its signal set and timer.
class StatsLogger {
 public:
  StatsLogger(Server& server, std::chrono::milliseconds interval);
  void LogNow() const;

 private:
  void AwaitSignal();
  void AwaitTick();

  const Server& server_;
  std::chrono::milliseconds interval_;
  asio::signal_set usr1_;
  asio::steady_timer timer_;
};

}  // namespace dst::control
