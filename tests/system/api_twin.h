// Builds a whole-allocator test against the hak_* API instead of replacing the process's
// malloc (define HAK_TEST_API_TWIN), so that ThreadSanitizer and AddressSanitizer, which
// own malloc, can run it: `<name>_api` targets in tests/BUILD.bazel. Include it after
// every system header.
#ifndef HAK_TESTS_SYSTEM_API_TWIN_H
#define HAK_TESTS_SYSTEM_API_TWIN_H

#include <thread>

namespace hak_test {

// Whether a fork child of a multithreaded parent cannot start threads: ThreadSanitizer
// refuses ("dup thread with used id"), and AddressSanitizer's own allocator, which
// thread creation calls, may have been locked by a parent thread at the fork (GCC 12's
// runtime takes no atfork lock): the child hangs.
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define HAK_TEST_CHILD_THREADS 0
#else
#define HAK_TEST_CHILD_THREADS 1
#endif

// Runs f on a new thread of a fork child and waits for it; where the child cannot start
// threads, on its forking thread instead.
template <typename F>
void RunOnChildThread(F f) {
#if !HAK_TEST_CHILD_THREADS
  f();
#else
  std::thread(f).join();
#endif
}

}  // namespace hak_test

#ifdef HAK_TEST_API_TWIN
#define HAK_TEST_TWIN 1
#include "allocator/hakmem.h"
#define malloc hak_malloc
#define free hak_free
#define calloc hak_calloc
#define realloc hak_realloc
#define posix_memalign hak_posix_memalign
#define malloc_trim hak_malloc_trim

#else
#define HAK_TEST_TWIN 0
#endif

#endif  // HAK_TESTS_SYSTEM_API_TWIN_H
