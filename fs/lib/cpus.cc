#include "cpus.h"

#include <sched.h>

#include <algorithm>
#include <cerrno>
#include <fstream>
#include <string>
#include <thread>

#include "parse_size.h"

namespace cryptex {

namespace {

// CPUs in this process's affinity mask, 0 if unknown.
unsigned AffinityCpus() {
  // Grown until the kernel's mask fits (machines with over 1024 CPUs).
  for (size_t cpus = 1024; cpus <= (1u << 20); cpus *= 2) {
    cpu_set_t* set = CPU_ALLOC(cpus);
    if (set == nullptr) return 0;
    const size_t size = CPU_ALLOC_SIZE(cpus);
    const int rc = sched_getaffinity(0, size, set);
    const int n = rc == 0 ? CPU_COUNT_S(size, set) : 0;
    CPU_FREE(set);
    if (rc == 0) return static_cast<unsigned>(n);
    if (errno != EINVAL) return 0;
  }
  return 0;
}

// The cgroup v2 quota of this process's cgroup, if any.
std::optional<unsigned> CgroupCpus() {
  std::ifstream cg("/proc/self/cgroup");
  std::string line;
  while (std::getline(cg, line)) {
    if (line.rfind("0::", 0) != 0) continue;  // the v2 (unified) hierarchy
    std::ifstream max("/sys/fs/cgroup" + line.substr(3) + "/cpu.max");
    std::string value;
    if (std::getline(max, value)) return CpusFromCpuMax(value);
  }
  return std::nullopt;
}

}  // namespace

std::optional<unsigned> CpusFromCpuMax(std::string_view line) {
  while (!line.empty() && (line.back() == '\n' || line.back() == ' ')) line.remove_suffix(1);
  const size_t sp = line.find(' ');
  if (sp == std::string_view::npos) return std::nullopt;
  const std::string_view quota = line.substr(0, sp);
  if (quota == "max") return std::nullopt;
  const auto q = ParseDecimal(quota);
  const auto p = ParseDecimal(line.substr(sp + 1));
  if (!q || !p || *q == 0 || *p == 0) return std::nullopt;
  const uint64_t cpus = (*q + *p - 1) / *p;
  return static_cast<unsigned>(std::min<uint64_t>(cpus, 1u << 20));
}

unsigned UsableCpusNow() {
  unsigned cpus = AffinityCpus();
  if (cpus == 0) cpus = std::thread::hardware_concurrency();
  if (const auto quota = CgroupCpus()) cpus = cpus == 0 ? *quota : std::min(cpus, *quota);
  return std::max(cpus, 1u);
}

unsigned UsableCpus() {
  static const unsigned n = UsableCpusNow();
  return n;
}

}  // namespace cryptex
