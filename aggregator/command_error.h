// The one error line a failing dst-aggregator command leaves on stderr
// ("dst-aggregator: error: MESSAGE", or a JSON object with --log-format json)
// and the exit code that goes with it.
#pragma once

#include "common/log.h"
#include "common/status.h"

namespace dst::aggregator {

inline int ExitWithError(const Status& s) {
  LOG_ERROR("%s", s.message().c_str());
  return 1;
}

}  // namespace dst::aggregator
