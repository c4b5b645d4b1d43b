// How many CPUs this process may use: the one answer every thread pool
// (build, mkpatch, the delta codec, patched-file passes, the mount's
// decoders) sizes itself by.
#pragma once

#include <optional>
#include <string_view>

namespace cryptex {

// The CPUs this process may run on (sched_getaffinity: taskset, cpusets),
// further capped by a cgroup v2 CPU quota (cpu.max of the process's cgroup,
// rounded up: a container limited to 1.5 CPUs gets 2). At least 1. Computed
// once per process. std::thread::hardware_concurrency() counts every CPU of
// the machine, so a device pinned to 2 of 8 cores would run 8 threads.
unsigned UsableCpus();
// The same, computed now (tests: after changing the affinity).
unsigned UsableCpusNow();

// The CPUs a cgroup v2 "cpu.max" line allows ("QUOTA PERIOD", rounded up;
// QUOTA "max" means no limit): nullopt for no limit or a malformed line.
std::optional<unsigned> CpusFromCpuMax(std::string_view line);

}  // namespace cryptex
