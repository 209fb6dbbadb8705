// The purge thread on a fake pass, without the allocator: it starts only once the kicks
// add up to HAK_PURGE_START_BYTES, runs passes while memory waits, sleeps when none does
// and wakes on a kick, never starts inside a deferred region, and is started afresh in a
// fork child. One thread per process: the cases run in order and build on each other.
#include "allocator/internal/purge.h"

#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "allocator/internal/options.h"
#include "gtest/gtest.h"

namespace {

std::atomic<int> g_waiting{1};  // what the fake pass answers
std::atomic<int> g_calls{0};

int FakePass() {
  g_calls++;
  return g_waiting.load();
}

void SleepMs(int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

// Waits up to 2 s for `cond`.
template <typename F>
bool Eventually(F cond) {
  for (int i = 0; i < 400 && !cond(); i++) SleepMs(5);
  return cond();
}

class PurgeThreadTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    hak_option_values[HAK_OPT_DECAY_MS] = 80;  // a pass every 10 ms
    hak_option_values[HAK_OPT_PURGE_THREAD] = 1;
    hak_purge_set_pass(FakePass);
  }
};

TEST_F(PurgeThreadTest, StartsOnlyOnceTheKicksAddUp) {
  hak_purge_kick(HAK_PURGE_START_BYTES / 2);
  SleepMs(30);
  EXPECT_FALSE(hak_purge_running()) << "half the start's worth of free memory";
  EXPECT_EQ(g_calls.load(), 0);
  hak_purge_defer_begin();
  hak_purge_kick(HAK_PURGE_START_BYTES / 2);
  EXPECT_FALSE(hak_purge_running()) << "not inside a deferred region";
  hak_purge_defer_end();
  EXPECT_TRUE(hak_purge_running()) << "started at the end of the region";
  EXPECT_TRUE(Eventually([] { return g_calls.load() >= 3; })) << "passes while memory waits";
}

TEST_F(PurgeThreadTest, SleepsWhenNothingWaitsAndWakesOnAKick) {
  g_waiting = 0;
  SleepMs(50);  // the pass in flight answers 0, and the thread goes to sleep
  int calls = g_calls.load();
  SleepMs(100);
  EXPECT_EQ(g_calls.load(), calls) << "no pass while nothing waits (ten steps)";
  g_waiting = 1;
  hak_purge_kick(1);
  EXPECT_TRUE(Eventually([&] { return g_calls.load() >= calls + 3; })) << "woken by the kick";
}

TEST_F(PurgeThreadTest, AForkChildStartsItsOwn) {
#ifdef __SANITIZE_THREAD__
  GTEST_SKIP() << "ThreadSanitizer cannot start threads after a multi-threaded fork";
#endif
  fflush(nullptr);
  pid_t pid = fork();
  if (pid == 0) {
    hak_purge_fork_child();  // what the allocator's atfork handler does
    if (hak_purge_running()) _exit(3);
    int calls = g_calls.load();
    hak_purge_kick(HAK_PURGE_START_BYTES);
    if (!hak_purge_running()) _exit(4);
    _exit(Eventually([&] { return g_calls.load() > calls; }) ? 0 : 5);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "3: inherited as running; 4: no start; 5: no pass";
}

TEST_F(PurgeThreadTest, OffMeansNoThread) {
  pid_t pid = fork();
  if (pid == 0) {
    hak_purge_fork_child();
    hak_option_values[HAK_OPT_PURGE_THREAD] = 0;
    hak_purge_kick(HAK_PURGE_START_BYTES * 4);
    _exit(hak_purge_running() ? 1 : 0);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

}  // namespace
