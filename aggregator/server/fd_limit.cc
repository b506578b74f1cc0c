#include "aggregator/server/fd_limit.h"

#include <cerrno>
#include <string>

#include "common/log.h"

namespace dst::server {

Status PlanFileLimit(uint64_t max_connections, uint64_t others, const struct rlimit& limits,
                     rlim_t* soft) {
  const uint64_t needed = max_connections + others + kSpareDescriptors;
  *soft = limits.rlim_cur;
  if (limits.rlim_cur == RLIM_INFINITY || limits.rlim_cur >= needed) return Status::Ok();
  if (limits.rlim_max != RLIM_INFINITY && limits.rlim_max < needed) {
    const uint64_t fits = limits.rlim_max > others + kSpareDescriptors
                              ? limits.rlim_max - others - kSpareDescriptors
                              : 0;
    const std::string smaller =
        fits > 0 ? ", or give --max-connections " + std::to_string(fits) + " or less" : "";
    return Status::Error(
        EMFILE, "--max-connections " + std::to_string(max_connections) + " needs " +
                    std::to_string(needed) + " open files (with " + std::to_string(others) +
                    " for members, listeners and the like and " +
                    std::to_string(kSpareDescriptors) + " spare), but at most " +
                    std::to_string(limits.rlim_max) +
                    " are allowed (the hard RLIMIT_NOFILE: LimitNOFILE= in a systemd unit, "
                    "ulimit -Hn in a shell); raise it" +
                    smaller);
  }
  *soft = static_cast<rlim_t>(needed);
  return Status::Ok();
}

Status EnsureFileLimit(uint64_t max_connections, uint64_t others) {
  struct rlimit limits {};
  if (::getrlimit(RLIMIT_NOFILE, &limits) != 0)
    return Status::FromErrno(errno, "getrlimit(RLIMIT_NOFILE)");
  rlim_t soft = 0;
  DST_RETURN_IF_ERROR(PlanFileLimit(max_connections, others, limits, &soft));
  if (soft == limits.rlim_cur) return Status::Ok();
  const rlim_t before = limits.rlim_cur;
  limits.rlim_cur = soft;
  if (::setrlimit(RLIMIT_NOFILE, &limits) != 0)
    return Status::FromErrno(errno, "raising the open-file limit to " + std::to_string(soft) +
                                        " for --max-connections " +
                                        std::to_string(max_connections));
  LOG_INFO("open-file limit raised from %llu to %llu for --max-connections %llu",
           static_cast<unsigned long long>(before), static_cast<unsigned long long>(soft),
           static_cast<unsigned long long>(max_connections));
  return Status::Ok();
}

}  // namespace dst::server
