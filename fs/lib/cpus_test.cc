#include "cpus.h"

#include <gtest/gtest.h>
#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>

namespace cryptex {
namespace {

TEST(CpusTest, CpuMaxLines) {
  EXPECT_EQ(CpusFromCpuMax("max 100000"), std::nullopt);
  EXPECT_EQ(CpusFromCpuMax("max 100000\n"), std::nullopt);
  EXPECT_EQ(CpusFromCpuMax("100000 100000\n"), 1u);
  EXPECT_EQ(CpusFromCpuMax("50000 100000"), 1u);   // half a CPU still needs one thread
  EXPECT_EQ(CpusFromCpuMax("150000 100000"), 2u);  // rounded up
  EXPECT_EQ(CpusFromCpuMax("400000 100000"), 4u);
  for (const char* bad :
       {"", "100000", "x 100000", "100000 0", "0 100000", "-1 100000", "100000 100000 7"}) {
    EXPECT_EQ(CpusFromCpuMax(bad), std::nullopt) << bad;
  }
}

// A process pinned to one CPU (taskset -c 0) sizes its pools for one,
// whatever the machine has; unpinned, for what it may use.
TEST(CpusTest, AffinityLimitsTheCount) {
  cpu_set_t mine;
  ASSERT_EQ(sched_getaffinity(0, sizeof mine, &mine), 0);
  EXPECT_GE(UsableCpus(), 1u);
  EXPECT_LE(UsableCpus(), static_cast<unsigned>(CPU_COUNT(&mine)));
  EXPECT_EQ(UsableCpus(), UsableCpusNow());
  int first = -1;
  for (int c = 0; c < CPU_SETSIZE && first < 0; ++c) {
    if (CPU_ISSET(c, &mine)) first = c;
  }
  ASSERT_GE(first, 0);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {  // pinned to one CPU; exit status: what it counts
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(first, &one);
    if (sched_setaffinity(0, sizeof one, &one) != 0) _exit(100);
    _exit(static_cast<int>(std::min(UsableCpusNow(), 99u)));
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 1) << "a process pinned to one CPU counted another number";
}

}  // namespace
}  // namespace cryptex
