// The end of a fio run that a fault test started: what a user checks of it.
#pragma once

#include <doctest/doctest.h>

#include <csignal>
#include <optional>

#include "tests/fault/fault_fixture.h"

namespace dst::test::fault {

// Waits for `fio` (60 s at most, then it is killed and the test stops) and checks its end: exit
// 0, no verify failure on stderr, no error in its JSON report (--output-format=json), which it
// returns for the caller's own checks.
inline FioReport FinishFio(Process& fio) {
  const std::optional<int> code = fio.Wait(60s);
  if (!code) fio.Kill(SIGKILL);
  REQUIRE_MESSAGE(code.has_value(), "fio did not finish within 60 s");
  INFO(JoinArgv(fio.argv()));
  INFO("fio stderr:\n" << fio.stderr_text());
  CHECK(fio.exit_code() == 0);
  CHECK_FALSE(Contains(fio.stderr_text(), "verify"));
  const FioReport report = ParseFioJson(fio.stdout_text());
  CHECK(report.error == 0);
  return report;
}

}  // namespace dst::test::fault
