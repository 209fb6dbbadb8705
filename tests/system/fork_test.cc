// fork() under load: the child of a multithreaded parent inherits heaps that other
// threads were in the middle of changing, and locks they held. These scenarios hung or
// crashed before the fork path took no lock in the parent and repaired what the child
// inherited. Each runs in a scenario process of its own, watched with a deadline, so a
// hang fails the test instead of stalling the suite.
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_format.h"
#include "allocator/hakmem.h"
#include "gtest/gtest.h"
#include "tests/system/api_twin.h"
#include "tests/system/test_util.h"

namespace {

using hak_test::Stamp;
using hak_test::StampIntact;

// Waits for `pid` until `seconds` pass; kills it then. Returns the wait status, or -1
// when it had to be killed.
int WaitWithDeadline(pid_t pid, double seconds) {
  struct timespec start;
  clock_gettime(CLOCK_MONOTONIC, &start);
  for (;;) {
    int status = 0;
    pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) return status;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    double waited = static_cast<double>(now.tv_sec - start.tv_sec) +
                    static_cast<double>(now.tv_nsec - start.tv_nsec) / 1e9;
    if (waited > seconds) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      return -1;
    }
    usleep(2000);
  }
}

// Runs `scenario` in a process of its own (forked while this process has one thread);
// its return value is the exit code. Expects exit code 0 within `seconds`.
template <typename F>
void ExpectScenarioPasses(const char *name, double seconds, F scenario) {
  fflush(nullptr);
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) _exit(scenario());
  int status = WaitWithDeadline(pid, seconds);
  ASSERT_NE(status, -1) << name << ": hung for " << seconds << " s and was killed";
  ASSERT_TRUE(WIFEXITED(status)) << name << ": died with signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), 0) << name;
}

// Forks `forks` children while the scenario's threads run; each child runs `child` and
// exits with its result. Returns 0 when every child exited 0 within 2 s, else the number
// of the first child that did not (1-based), + 100 for a hang.
template <typename C>
int ForkChildren(int forks, C child) {
  for (int i = 0; i < forks; i++) {
    pid_t pid = fork();
    if (pid < 0) return 200;
    if (pid == 0) _exit(child());
    int status = WaitWithDeadline(pid, 2.0);
    if (status == -1) return 100 + (i + 1 > 99 ? 99 : i + 1);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) return i + 1 > 99 ? 99 : i + 1;
  }
  return 0;
}

// Issue item 1: a thread churns Pool blocks (fill() extends its list before counting)
// while the main thread forks; each child starts a thread that allocates and frees in
// the same class. The child must never be handed the half-filled list.
TEST(SystemForkTest, ChildOfAPoolChurningParentAllocatesInANewThread) {
  ExpectScenarioPasses("pool churn", 60, [] {
    std::atomic<bool> stop{false};
    std::thread churn([&] {
      std::vector<void *> blocks(300);
      while (!stop.load(std::memory_order_relaxed)) {
        for (void *&p : blocks) p = malloc(2000);
        for (void *p : blocks) free(p);
      }
    });
    int r = ForkChildren(100, [] {
      int ok = 1;
      hak_test::RunOnChildThread([&] {
        for (int round = 0; round < 50; round++) {
          void *b[8];
          for (int k = 0; k < 8; k++) {
            b[k] = malloc(2000);
            if (!b[k])
              ok = 0;
            else
              Stamp(b[k], 2000, k);
          }
          for (int k = 0; k < 8; k++) {
            if (b[k] && !StampIntact(b[k], 2000, k)) ok = 0;
            free(b[k]);
          }
        }
      });
      return ok ? 0 : 1;
    });
    stop = true;
    churn.join();
    return r;
  });
}

// Issue item 2: threads that allocate and exit, their blocks freed afterwards by another
// thread (remote frees into dead heaps, which that thread then collects), while the main
// thread forks; each child allocates a large block twice. No child may hang.
TEST(SystemForkTest, ChildOfAParentCollectingDeadHeapsDoesNotHang) {
  ExpectScenarioPasses("dead heaps", 90, [] {
    std::atomic<bool> stop{false};
    std::thread spawner([&] {
      while (!stop.load(std::memory_order_relaxed)) {
        std::vector<void *> blocks(400);
        std::thread([&] {
          for (void *&p : blocks) p = malloc(1000);
        }).join();
        for (void *p : blocks) free(p);
      }
    });
    int r = ForkChildren(100, [] {
      for (int i = 0; i < 2; i++) {
        void *p = malloc(200000);
        if (!p) return 1;
        memset(p, 1, 200000);
        free(p);
      }
      void *small = malloc(1000);  // the Tiny class the parent's threads used
      if (!small) return 2;
      free(small);
      return 0;
    });
    stop = true;
    spawner.join();
    return r;
  });
}

// ---- fork from a signal handler that interrupted the allocator (item 9). ----

std::atomic<int> g_child_failures{0};
std::atomic<int> g_handled{0};

void ForkingHandler(int) {
  pid_t pid = fork();
  if (pid == 0) {
    // Only the interrupted thread's copy exists here; it may be inside hakmem. The child
    // exits at once, as a child of a signal-handler fork should.
    _exit(0);
  }
  if (pid > 0) {
    int status = 0;
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) g_child_failures++;
  }
  g_handled++;
}

// A thread allocates and frees across every tier (slab and span churn: the slow paths
// take hakmem's locks) while another thread keeps signalling it; the handler forks.
// Taking a lock in the atfork prepare handler that the interrupted thread already holds
// deadlocked here.
TEST(SystemForkTest, ForkFromASignalHandlerThatInterruptedMalloc) {
  ExpectScenarioPasses("signal fork", 60, [] {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = ForkingHandler;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGUSR1, &sa, nullptr);
    std::atomic<bool> stop{false}, ready{false};
    std::atomic<uint64_t> corrupt{0};
    std::thread worker([&] {
      size_t sizes[] = {24, 200, 1000, 3000, 20000, 100000, 700000};
      std::vector<void *> blocks(600);
      // The twin's vector comes from glibc's malloc, whose first call in a thread takes
      // glibc's arena list lock: a signal there forked into glibc's own deadlock (its
      // fork handler waits for that lock), once in about ten runs.
      ready = true;
      uint64_t round = 0;
      while (!stop.load(std::memory_order_relaxed)) {
        size_t n = sizes[round % 7];
        for (size_t i = 0; i < blocks.size(); i++) {
          blocks[i] = malloc(n);
          Stamp(blocks[i], n < 64 ? n : 64, i + round);
        }
        for (size_t i = 0; i < blocks.size(); i++) {
          if (!StampIntact(blocks[i], n < 64 ? n : 64, i + round)) corrupt++;
          free(blocks[i]);
        }
        round++;
      }
    });
    // One signal at a time (pending signals of one kind merge), each handled before the
    // next, at varying points of the worker's loop.
    pthread_t target = worker.native_handle();
    while (!ready) usleep(100);
    for (int i = 0; i < 300; i++) {
      int before = g_handled.load();
      pthread_kill(target, SIGUSR1);
      while (g_handled.load() == before) usleep(100);
      usleep(static_cast<useconds_t>(i % 7) * 150);
    }
    stop = true;
    worker.join();
    return g_child_failures.load() == 0 && corrupt.load() == 0 ? 0 : 1;
  });
}

// ---- stdio locks against allocator locks (item 9). ----

// Threads read lines with getline (which allocates while it holds the FILE's lock),
// another runs fflush(NULL) (stdio's list lock, then each FILE's lock), and the main
// thread forks (glibc takes the list lock after the atfork prepare handlers). An
// allocator that holds its locks from prepare to the parent handler closes a cycle.
TEST(SystemForkTest, ForkWhileOtherThreadsUseStdio) {
  if (HAK_TEST_TWIN) GTEST_SKIP() << "stdio allocates with the process's malloc, not hak_*";
  char path[] = "/tmp/hakmem_fork_stdio_XXXXXX";
  int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  {
    std::string text;
    for (int i = 0; i < 200; i++)
      text += std::string(static_cast<size_t>(i * 997 % 150000), 'x') + "\n";
    ASSERT_EQ(write(fd, text.data(), text.size()), static_cast<ssize_t>(text.size()));
    close(fd);
  }
  ExpectScenarioPasses("stdio fork", 90, [&path] {
    std::atomic<bool> stop{false};
    std::vector<std::thread> readers;
    for (int t = 0; t < 3; t++) {
      readers.emplace_back([&] {
        FILE *f = fopen(path, "r");
        if (!f) abort();
        while (!stop.load(std::memory_order_relaxed)) {
          char *line = nullptr;
          size_t cap = 0;
          if (getline(&line, &cap, f) < 0) rewind(f);
          free(line);
        }
        fclose(f);
      });
    }
    std::thread flusher([&] {
      while (!stop.load(std::memory_order_relaxed)) {
        fflush(nullptr);
        sched_yield();  // lets fork() get stdio's list lock now and then
      }
    });
    int r = ForkChildren(100, [] {
      void *p = malloc(100);
      free(p);
      return 0;
    });
    stop = true;
    for (auto &t : readers) t.join();
    flusher.join();
    return r;
  });
  unlink(path);
}

}  // namespace
