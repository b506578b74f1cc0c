#include "aggregator/fd_limit.h"

#include <sys/resource.h>

#include <cerrno>
#include <string>

#include "common/log.h"

namespace dst::aggregator {

Status EnsureFileLimit(uint64_t needed, uint64_t reserve, const std::string& what) {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) return Status::FromErrno(errno, "getrlimit");
  if (limit.rlim_cur == RLIM_INFINITY || limit.rlim_cur >= needed) return Status::Ok();
  if (limit.rlim_max != RLIM_INFINITY && limit.rlim_max < needed) {
    const uint64_t hard = limit.rlim_max;
    const std::string fits =
        hard > reserve ? "lower it to at most " + std::to_string(hard - reserve) + ", or " : "";
    return Status::Error(EMFILE, what + " needs about " + std::to_string(needed) +
                                     " open files, but the limit is " + std::to_string(hard) +
                                     ": " + fits +
                                     "raise the limit (ulimit -n, or LimitNOFILE= in a "
                                     "systemd unit)");
  }
  const uint64_t before = limit.rlim_cur;
  limit.rlim_cur = needed;
  if (::setrlimit(RLIMIT_NOFILE, &limit) != 0)
    return Status::FromErrno(errno, "raising the open file limit to " + std::to_string(needed));
  LOG_INFO("raised the open file limit from %llu to %llu for %s",
           static_cast<unsigned long long>(before), static_cast<unsigned long long>(needed),
           what.c_str());
  return Status::Ok();
}

}  // namespace dst::aggregator
