// Address-space limits (RLIMIT_AS, `ulimit -v`): hakmem must leave them to the program.
// A limit set before the start is in force when hakmem initialises at load, so those
// cases re-execute this binary under the limit with one test selected; the selected
// test does the work only in that child (HAKMEM_TEST_CHILD is set) and is skipped in an
// ordinary run.
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <vector>

#include "allocator/hakmem.h"
#include "gtest/gtest.h"
#include "tests/system/test_util.h"

namespace {

using hak_test::Stamp;
using hak_test::StampIntact;

using hak_test::InChild;
using hak_test::RunSelf;

void ExpectChildPasses(const char *test, rlim_t limit) {
  int status = RunSelf(std::string("SystemAsLimitChild.") + test, limit);
  ASSERT_NE(status, -1) << test << " hung";
  ASSERT_TRUE(WIFEXITED(status)) << test << " died with signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), 0) << test << " failed (its output is above)";
}

uint64_t VmSizeBytes() {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  uint64_t kb = 0;
  while (f && fgets(line, sizeof line, f)) {
    if (strncmp(line, "VmSize:", 7) == 0) kb = strtoull(line + 7, nullptr, 10);
  }
  if (f) fclose(f);
  return kb << 10;
}

// ---- Run in the re-executed child only. ----

// Under `ulimit -v 400000`, 1 MiB blocks until the limit: at least three quarters of it
// must go to the program (glibc gets 386 of the 390 MiB; a 256 MiB reservation left 102).
TEST(SystemAsLimitChild, MostOfALimitFromTheStartIsTheProgramsToUse) {
  if (!InChild()) GTEST_SKIP() << "runs under a limit, from SystemAsLimitTest";
  struct rlimit rl;
  ASSERT_EQ(getrlimit(RLIMIT_AS, &rl), 0);
  std::vector<void *> blocks;
  blocks.reserve(1024);
  for (;;) {
    void *p = malloc(size_t{1} << 20);
    if (!p) break;
    blocks.push_back(p);
  }
  EXPECT_EQ(errno, ENOMEM);
  uint64_t got = uint64_t{blocks.size()} << 20;
  fprintf(stderr, "allocated %lu MiB of a %lu MiB limit\n", (unsigned long)(got >> 20),
          (unsigned long)(rl.rlim_cur >> 20));
  EXPECT_GE(got, rl.rlim_cur / 4 * 3);
  for (void *p : blocks) free(p);
  // Small and mid-sized blocks still work under the limit.
  for (size_t n : {size_t{24}, size_t{700}, size_t{5000}, size_t{40000}}) {
    void *p = malloc(n);
    ASSERT_NE(p, nullptr) << n;
    free(p);
  }
}

// The limit is lowered at run time, after hakmem started (glibc's tst-malloc-thread-fail
// does this): threads must still be created and allocate. A 64 GiB reservation made at
// load counted against the new limit and left no room for a thread stack.
TEST(SystemAsLimitChild, ALimitLoweredAtRunTimeLeavesRoomForThreads) {
  if (!InChild()) GTEST_SKIP() << "runs under a limit, from SystemAsLimitTest";
  for (size_t n : {size_t{24}, size_t{700}, size_t{5000}, size_t{300000}}) free(malloc(n));
  const uint64_t limit = uint64_t{256} << 20;
  ASSERT_LT(VmSizeBytes(), limit / 2) << "hakmem's own address space before the limit";
  struct rlimit rl = {limit, limit};
  ASSERT_EQ(setrlimit(RLIMIT_AS, &rl), 0);
  constexpr int kThreads = 6;
  std::atomic<int> failures{0};
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, size_t{1} << 20);
  auto work = [](void *arg) -> void * {
    auto *failed = static_cast<std::atomic<int> *>(arg);
    std::vector<void *> blocks;
    for (int i = 0; i < 2000; i++) {
      size_t n = i % 100 == 0 ? 200000 : static_cast<size_t>(16 + (i * 37) % 20000);
      void *p = malloc(n);
      if (!p) {
        (*failed)++;
        continue;
      }
      Stamp(p, n < 64 ? n : 64, i);
      blocks.push_back(p);
    }
    for (size_t i = 0; i < blocks.size(); i++) free(blocks[i]);
    return nullptr;
  };
  for (int round = 0; round < 3; round++) {
    pthread_t threads[kThreads];
    int created = 0;
    for (int t = 0; t < kThreads; t++) {
      if (pthread_create(&threads[t], &attr, work, &failures) == 0)
        created++;
      else
        break;
    }
    EXPECT_EQ(created, kThreads) << "round " << round << ": thread creation failed";
    for (int t = 0; t < created; t++) pthread_join(threads[t], nullptr);
  }
  EXPECT_EQ(failures.load(), 0);
}

// ---- The ordinary run. ----

TEST(SystemAsLimitTest, UlimitV400000) {
  if (InChild()) GTEST_SKIP();
  ExpectChildPasses("MostOfALimitFromTheStartIsTheProgramsToUse", rlim_t{400000} << 10);
}

TEST(SystemAsLimitTest, LimitLoweredAtRunTime) {
  if (InChild()) GTEST_SKIP();
  ExpectChildPasses("ALimitLoweredAtRunTimeLeavesRoomForThreads", 0);
}

}  // namespace
