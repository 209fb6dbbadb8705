// The OS boundary: every call is counted by kind, commit/decommit show in the process's
// resident memory, and injected failures come back as ENOMEM without side effects.
#include "allocator/os_boundary/os.h"
#include "allocator/os_boundary/os_testing.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <thread>

#include "gtest/gtest.h"

namespace {

constexpr size_t kMiB = 1 << 20;

hak_os_counters_t Counters() {
  hak_os_counters_t c;
  hak_os_counters(&c);
  return c;
}

// Resident pages of [p, p+size), from mincore: the test asks the kernel, the allocator never does.
size_t ResidentBytes(void *p, size_t size) {
  size_t ps = hak_os_page_size();
  size_t pages = size / ps;
  unsigned char vec[4096];
  EXPECT_LE(pages, sizeof vec);
  EXPECT_EQ(mincore(p, size, vec), 0);
  size_t n = 0;
  for (size_t i = 0; i < pages; i++) n += vec[i] & 1;
  return n * ps;
}

TEST(OsBoundaryTest, PageSizeIsAPowerOfTwo) {
  size_t ps = hak_os_page_size();
  EXPECT_GE(ps, 4096u);
  EXPECT_EQ(ps & (ps - 1), 0u);
}

TEST(OsBoundaryTest, ReserveCommitDecommitReleaseAreCountedAndVisible) {
  hak_os_counters_t before = Counters();
  void *p = nullptr;
  ASSERT_EQ(hak_os_reserve(8 * kMiB, 2 * kMiB, &p), 0);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % (2 * kMiB), 0u);
  EXPECT_EQ(ResidentBytes(p, 8 * kMiB), 0u);

  ASSERT_EQ(hak_os_commit(p, 4 * kMiB), 0);
  std::memset(p, 0xab, 4 * kMiB);
  EXPECT_EQ(ResidentBytes(p, 8 * kMiB), 4 * kMiB);

  ASSERT_EQ(hak_os_decommit(p, 4 * kMiB), 0);
  EXPECT_EQ(ResidentBytes(p, 8 * kMiB), 0u);
  EXPECT_EQ(static_cast<unsigned char *>(p)[12345], 0) << "decommitted memory reads as zero";

  ASSERT_EQ(hak_os_release(p, 8 * kMiB), 0);
  hak_os_counters_t after = Counters();
  EXPECT_EQ(after.calls[HAK_OS_RESERVE] - before.calls[HAK_OS_RESERVE], 1u);
  EXPECT_EQ(after.calls[HAK_OS_COMMIT] - before.calls[HAK_OS_COMMIT], 1u);
  EXPECT_EQ(after.bytes[HAK_OS_COMMIT] - before.bytes[HAK_OS_COMMIT], 4 * kMiB);
  EXPECT_EQ(after.calls[HAK_OS_DECOMMIT] - before.calls[HAK_OS_DECOMMIT], 1u);
  EXPECT_EQ(after.bytes[HAK_OS_DECOMMIT] - before.bytes[HAK_OS_DECOMMIT], 4 * kMiB);
  // The aligned reservation trims its slack (up to two releases) plus our release.
  EXPECT_GE(after.calls[HAK_OS_RELEASE] - before.calls[HAK_OS_RELEASE], 1u);
  EXPECT_LE(after.calls[HAK_OS_RELEASE] - before.calls[HAK_OS_RELEASE], 3u);
}

TEST(OsBoundaryTest, MapGivesZeroedAlignedMemoryAndRemapGrowsIt) {
  void *p = nullptr;
  ASSERT_EQ(hak_os_map(kMiB, 64 * kMiB, &p), 0);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % (64 * kMiB), 0u);
  unsigned char *b = static_cast<unsigned char *>(p);
  for (size_t i = 0; i < kMiB; i += 4096) ASSERT_EQ(b[i], 0);
  b[kMiB - 1] = 7;
  void *q = nullptr;
  ASSERT_EQ(hak_os_remap(p, kMiB, 4 * kMiB, 1, &q), 0);
  EXPECT_EQ(static_cast<unsigned char *>(q)[kMiB - 1], 7);
  static_cast<unsigned char *>(q)[4 * kMiB - 1] = 1;
  ASSERT_EQ(hak_os_release(q, 4 * kMiB), 0);
}

TEST(OsBoundaryTest, ProtectMakesMemoryReadOnly) {
  void *p = nullptr;
  ASSERT_EQ(hak_os_map(hak_os_page_size(), 0, &p), 0);
  ASSERT_EQ(hak_os_protect(p, hak_os_page_size(), PROT_READ), 0);
  EXPECT_EQ(static_cast<volatile char *>(p)[0], 0);
  // A write now faults: the protection is real, not just a counted call.
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
  EXPECT_DEATH(static_cast<volatile char *>(p)[0] = 1, "");  // the sanitizer reports the fault
#else
  EXPECT_EXIT(static_cast<volatile char *>(p)[0] = 1, ::testing::KilledBySignal(SIGSEGV), "");
#endif
  ASSERT_EQ(hak_os_protect(p, hak_os_page_size(), PROT_READ | PROT_WRITE), 0);
  static_cast<volatile char *>(p)[0] = 1;
  ASSERT_EQ(hak_os_release(p, hak_os_page_size()), 0);
}

TEST(OsBoundaryTest, InjectedFailureHitsExactlyTheNthCall) {
  hak_os_fail_nth(HAK_OS_MAP, 2);
  void *a = nullptr, *b = reinterpret_cast<void *>(0x1), *c = nullptr;
  hak_os_counters_t before = Counters();
  EXPECT_EQ(hak_os_map(kMiB, 0, &a), 0);
  EXPECT_EQ(hak_os_map(kMiB, 0, &b), ENOMEM);
  EXPECT_EQ(b, reinterpret_cast<void *>(0x1)) << "a failed call leaves *out alone";
  EXPECT_EQ(hak_os_map(kMiB, 0, &c), 0);
  hak_os_counters_t after = Counters();
  EXPECT_EQ(after.failures[HAK_OS_MAP] - before.failures[HAK_OS_MAP], 1u);
  EXPECT_EQ(after.calls[HAK_OS_MAP] - before.calls[HAK_OS_MAP], 3u);
  EXPECT_EQ(hak_os_release(a, kMiB), 0);
  EXPECT_EQ(hak_os_release(c, kMiB), 0);
}

TEST(OsBoundaryTest, InjectionCoversEveryKindAndCanBeCancelled) {
  void *p = nullptr;
  ASSERT_EQ(hak_os_reserve(kMiB, 0, &p), 0);
  hak_os_fail_nth(HAK_OS_COMMIT, 1);
  EXPECT_EQ(hak_os_commit(p, kMiB), ENOMEM);
  hak_os_fail_nth(HAK_OS_DECOMMIT, 1);
  EXPECT_EQ(hak_os_decommit(p, kMiB), ENOMEM);
  hak_os_fail_nth(HAK_OS_PROTECT, 1);
  EXPECT_EQ(hak_os_protect(p, kMiB, PROT_READ), ENOMEM);
  hak_os_fail_nth(HAK_OS_RESERVE, 1);
  void *q = nullptr;
  EXPECT_EQ(hak_os_reserve(kMiB, 0, &q), ENOMEM);
  hak_os_fail_nth(HAK_OS_RELEASE, 1);  // the very next call would fail...
  hak_os_fail_nth(HAK_OS_RELEASE, 0);  // ...but the injection is cancelled
  EXPECT_EQ(hak_os_release(p, kMiB), 0);
}

TEST(OsBoundaryTest, RefusedMappingIsAnErrorNotACrash) {
  void *p = nullptr;
  EXPECT_EQ(hak_os_map(SIZE_MAX & ~(hak_os_page_size() - 1), 0, &p), ENOMEM);
  EXPECT_EQ(hak_os_map(size_t{1} << 62, size_t{1} << 62, &p), ENOMEM);
}

// A claim maps nothing: the address space only grows by what is mapped into it, and a
// fixed mapping never replaces one already there.
TEST(OsBoundaryTest, ClaimMapsNothingAndFixedMappingsNeverReplace) {
  const size_t size = size_t{4} << 30;
  void *base = nullptr;
  hak_os_counters_t before = Counters();
  ASSERT_EQ(hak_os_claim(size, 2 * kMiB, &base), 0);
  uintptr_t b = reinterpret_cast<uintptr_t>(base);
  EXPECT_EQ(b % (2 * kMiB), 0u);
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
  // The sanitizers may own the claim area: the claim is then a plain reservation.
  if (b < (uintptr_t{16} << 40) || b >= (uintptr_t{32} << 40)) {
    GTEST_SKIP() << "claimed as a reservation under a sanitizer";
  }
#endif
  EXPECT_GE(b, uintptr_t{16} << 40);
  EXPECT_LE(b + size, uintptr_t{32} << 40);
  EXPECT_EQ(Counters().calls[HAK_OS_RESERVE] - before.calls[HAK_OS_RESERVE], 1u);
  char *p = static_cast<char *>(base);
  unsigned char vec[1];
  EXPECT_NE(mincore(p, 4096, vec), 0) << "nothing is mapped at a claimed address";
  ASSERT_EQ(hak_os_commit_at(p, 2 * kMiB), 0);
  memset(p, 7, 2 * kMiB);
  EXPECT_EQ(hak_os_commit_at(p + kMiB, 2 * kMiB), EEXIST) << "overlaps the first";
  EXPECT_EQ(p[kMiB], 7) << "and left it alone";
  ASSERT_EQ(hak_os_reserve_at(p + 4 * kMiB, 2 * kMiB), 0);
  ASSERT_EQ(hak_os_commit(p + 4 * kMiB, kMiB), 0);
  p[4 * kMiB] = 1;
  EXPECT_EQ(hak_os_reserve_at(p + 4 * kMiB, kMiB), EEXIST);
  hak_os_fail_nth(HAK_OS_COMMIT, 1);
  EXPECT_EQ(hak_os_commit_at(p + 8 * kMiB, kMiB), ENOMEM);
  EXPECT_EQ(hak_os_release(p, 6 * kMiB), 0);
  // Two claims of the same size land in different places (a random choice each time).
  void *again = nullptr;
  ASSERT_EQ(hak_os_claim(size, 2 * kMiB, &again), 0);
  void *third = nullptr;
  ASSERT_EQ(hak_os_claim(size, 2 * kMiB, &third), 0);
  EXPECT_FALSE(again == base && third == base);
}

TEST(OsBoundaryTest, KindNamesAreDistinct) {
  for (int i = 0; i < HAK_OS_KIND_COUNT; i++) {
    for (int j = i + 1; j < HAK_OS_KIND_COUNT; j++) {
      EXPECT_STRNE(hak_os_kind_name(static_cast<hak_os_kind_t>(i)),
                   hak_os_kind_name(static_cast<hak_os_kind_t>(j)));
    }
  }
}

// What the idle flush reads of another thread (heap/heap.h): the call it is blocked in,
// the signals it blocks, and context switches that change whenever it ran.
TEST(OsBoundaryTest, ThreadStateShowsTheCallAThreadWaitsInAndWhetherItRan) {
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  std::atomic<int> tid{0};
  std::atomic<uint64_t> blocked_in_thread{0};
  std::atomic<bool> spin{true};
  std::thread reader([&] {
    sigset_t usr1;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &usr1, nullptr);
    blocked_in_thread = hak_os_thread_blocked();
    tid = hak_os_thread_id();
    while (spin) {  // running: not in a call
    }
    char c;
    while (read(fds[0], &c, 1) == 1 && c != 'q') {
    }
  });
  while (tid == 0) std::this_thread::yield();
  hak_os_thread_t t;
  ASSERT_EQ(hak_os_thread_state(tid, &t), 0);
  EXPECT_EQ(t.call, -1) << "a thread running user code is in no call";
  spin = false;
  auto wait_in_read = [&](hak_os_thread_t *out) {
    for (int i = 0; i < 2000; i++) {
      if (hak_os_thread_state(tid, out) == 0 && out->call == SYS_read) return true;
      usleep(1000);
    }
    return false;
  };
  ASSERT_TRUE(wait_in_read(&t));
  EXPECT_NE(t.blocked & (uint64_t{1} << (SIGUSR1 - 1)), 0u) << "SIGUSR1 is blocked";
  EXPECT_EQ(t.blocked, blocked_in_thread.load()) << "the thread's own reading agrees";
  usleep(20000);
  hak_os_thread_t again;
  ASSERT_EQ(hak_os_thread_state(tid, &again), 0);
  EXPECT_EQ(again.call, SYS_read);
  EXPECT_EQ(again.switches, t.switches) << "it has not run";
  EXPECT_EQ(again.site, t.site) << "the same wait reads the same";
  ASSERT_EQ(write(fds[1], "x", 1), 1);  // it wakes, reads, and waits again
  hak_os_thread_t later;
  for (int i = 0; i < 2000; i++) {
    ASSERT_TRUE(wait_in_read(&later));
    if (later.switches != t.switches) break;
    usleep(1000);
  }
  EXPECT_GT(later.switches, t.switches) << "it ran: its context switches grew";
  ASSERT_EQ(write(fds[1], "q", 1), 1);
  reader.join();
  close(fds[0]);
  close(fds[1]);
  EXPECT_EQ(hak_os_thread_state(tid, &t), ENOENT) << "the thread is gone";
  EXPECT_EQ(hak_os_thread_state(0, &t), EINVAL);
}

}  // namespace
