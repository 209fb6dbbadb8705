// What the kernel says of this process (/proc/self), for tests that judge memory and
// mappings by it rather than by hakmem's own counters. Needs nothing of the allocator, so
// the tier tests include it too.
#ifndef HAK_TESTS_SYSTEM_PROC_UTIL_H
#define HAK_TESTS_SYSTEM_PROC_UTIL_H

#include <stddef.h>
#include <stdio.h>
#include <unistd.h>

namespace hak_test {

// The process's resident bytes (/proc/self/statm).
inline size_t ResidentBytes() {
  long pages = 0, resident = 0;
  FILE *f = fopen("/proc/self/statm", "r");
  if (f) {
    if (fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
    fclose(f);
  }
  return static_cast<size_t>(resident) * static_cast<size_t>(sysconf(_SC_PAGESIZE));
}

// The process's mappings (lines of /proc/self/maps), what vm.max_map_count limits.
inline size_t MappingCount() {
  FILE *f = fopen("/proc/self/maps", "r");
  if (!f) return 0;
  size_t lines = 0;
  for (int c; (c = fgetc(f)) != EOF;) lines += c == '\n';
  fclose(f);
  return lines;
}

}  // namespace hak_test

#endif  // HAK_TESTS_SYSTEM_PROC_UTIL_H
