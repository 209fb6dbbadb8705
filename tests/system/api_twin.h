// Builds a whole-allocator test against the hak_* API instead of replacing the process's
// malloc (define HAK_TEST_API_TWIN), so that ThreadSanitizer and AddressSanitizer, which
// own malloc, can run it: `<name>_api` targets in tests/BUILD.bazel. Include it after
// every system header.
#ifndef HAK_TESTS_SYSTEM_API_TWIN_H
#define HAK_TESTS_SYSTEM_API_TWIN_H

#ifdef HAK_TEST_API_TWIN
#include "allocator/hakmem.h"
#define malloc hak_malloc
#define free hak_free
#define calloc hak_calloc
#define realloc hak_realloc
#define posix_memalign hak_posix_memalign
#define malloc_trim hak_malloc_trim
#endif

#endif  // HAK_TESTS_SYSTEM_API_TWIN_H
