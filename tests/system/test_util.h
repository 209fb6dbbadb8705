// Helpers shared by the whole-allocator tests: stamped data and counter snapshots.
#ifndef HAK_TESTS_SYSTEM_TEST_UTIL_H
#define HAK_TESTS_SYSTEM_TEST_UTIL_H

#include <fcntl.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>
#include <utility>
#include <vector>

#include "allocator/hakmem.h"

namespace hak_test {

// Writes a pattern derived from `seed` over n bytes; StampIntact checks it.
inline void Stamp(void *p, size_t n, uint64_t seed) {
  auto *b = static_cast<unsigned char *>(p);
  for (size_t i = 0; i < n; i++) b[i] = static_cast<unsigned char>(seed * 131 + i * 31);
}

inline bool StampIntact(const void *p, size_t n, uint64_t seed) {
  auto *b = static_cast<const unsigned char *>(p);
  for (size_t i = 0; i < n; i++) {
    if (b[i] != static_cast<unsigned char>(seed * 131 + i * 31)) return false;
  }
  return true;
}

inline hak_stats_t Stats() {
  hak_stats_t s;
  hak_stats_get(&s);
  return s;
}

// The next value of a xorshift64 sequence in *x (never 0 unless seeded with 0): random
// sizes and choices for stress tests, repeatable from the seed.
inline uint64_t NextRandom(uint64_t *x) {
  *x ^= *x << 13;
  *x ^= *x >> 7;
  *x ^= *x << 17;
  return *x;
}

// Hides a value from the compiler, which rejects impossible requests made on purpose.
inline size_t Opaque(size_t v) {
  volatile size_t hidden = v;
  return hidden;
}

// A /proc/self/status field in KiB, read with system calls only: reading it must not
// make an allocator call, or the "no call at all" cases would not be.
inline uint64_t StatusKib(const char *field) {
  char buf[4096];
  int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return 0;
  buf[n] = '\0';
  const char *at = strstr(buf, field);
  return at ? strtoull(at + strlen(field) + 1, nullptr, 10) : 0;
}
inline uint64_t RssKib() { return StatusKib("VmRSS"); }

// Whether this process is a child re-executed by RunSelf.
inline bool InChild() { return getenv("HAKMEM_TEST_CHILD") != nullptr; }

// Runs this test binary again with only `test` selected, with the environment variables
// `env` set and RLIMIT_AS = `limit` bytes (0: none) from its start (before hakmem
// initialises at load). Returns its wait status, or -1 when it had to be killed after
// 120 s. The selected test should do its work only when InChild().
inline int RunSelf(const std::string &test, rlim_t limit,
                   const std::vector<std::pair<std::string, std::string>> &env = {}) {
  fflush(nullptr);
  pid_t pid = fork();
  if (pid == 0) {
    if (limit) {
      struct rlimit rl = {limit, limit};
      if (setrlimit(RLIMIT_AS, &rl) != 0) _exit(126);
    }
    setenv("HAKMEM_TEST_CHILD", "1", 1);
    for (const auto &kv : env) setenv(kv.first.c_str(), kv.second.c_str(), 1);
    std::string filter = "--gtest_filter=" + test;
    execl("/proc/self/exe", "hakmem_test_child", filter.c_str(), static_cast<char *>(nullptr));
    _exit(127);
  }
  for (int waited_ms = 0; waited_ms < 120000; waited_ms += 5) {
    int status = 0;
    if (waitpid(pid, &status, WNOHANG) == pid) return status;
    usleep(5000);
  }
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
  return -1;
}

}  // namespace hak_test

#endif  // HAK_TESTS_SYSTEM_TEST_UTIL_H
