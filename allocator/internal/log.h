/* Non-allocating text output: a bounded buffer writer, the one-line fail-fast handler,
 * and warnings. Everything here is usable before initialisation and inside malloc, so
 * nothing calls stdio or allocates; output goes out with write(2). */
#ifndef HAK_ALLOCATOR_INTERNAL_LOG_H
#define HAK_ALLOCATOR_INTERNAL_LOG_H

#include <stddef.h>
#include <stdint.h>

#include "allocator/internal/config.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
  char *data;
  size_t len;
  size_t cap; /* text past cap is dropped, never overflows */
} hak_buf_t;

void hak_buf_str(hak_buf_t *b, const char *s);
void hak_buf_u64(hak_buf_t *b, uint64_t v);
void hak_buf_i64(hak_buf_t *b, int64_t v);
void hak_buf_hex(hak_buf_t *b, uintptr_t v); /* "0x" then lowercase hex digits */
/* Right-aligns the decimal v in a field of `width` characters. */
void hak_buf_u64_width(hak_buf_t *b, uint64_t v, unsigned width);
/* Writes the whole buffer to fd, retrying short writes; errors are ignored. */
void hak_buf_flush(hak_buf_t *b, int fd);

/* The fail-fast handler: writes "hakmem: <what> <ptr> (<where>)" and aborts.
 * `where` may be NULL. Never returns, never allocates. */
__attribute__((noreturn)) HAK_COLD void hak_fatal(const char *what, const void *ptr,
                                                  const char *where);

/* "<tier> class <cls>" into buf (cap bytes, NUL-terminated): the `where` of a message. */
const char *hak_class_where(char *buf, size_t cap, const char *tier, unsigned cls);

/* Whether bytes [from, to) of p all equal `value` (the debug builds' fill checks). */
int hak_bytes_are(const void *p, size_t from, size_t to, int value);

/* Fills n bytes of block p with `value` (the debug builds' fills). Both may touch a free
 * block, which ASan builds keep poisoned: they are not instrumented (os_boundary/asan.h). */
void hak_fill_bytes(void *p, int value, size_t n);

/* Fail-fast checks are compiled in every variant (so they type-check) and cost nothing
 * when BUILD_RELEASE=1. */
#define HAK_CHECK(cond, what, ptr, where)              \
  do {                                                 \
    if (HAK_CHECKS && HAK_UNLIKELY(!(cond))) {         \
      hak_fatal((what), (const void *)(ptr), (where)); \
    }                                                  \
  } while (0)

/* Internal invariants, kept apart from the checks on user misuse (HAK_CHECK): compiled in
 * every variant, checked in debug builds; a failure is a bug in hakmem and says so. */
#define HAK_ASSERT(cond, what, ptr)                                  \
  do {                                                               \
    if (HAK_CHECKS && HAK_UNLIKELY(!(cond))) {                       \
      hak_fatal("internal error: " what, (const void *)(ptr), NULL); \
    }                                                                \
  } while (0)

#ifdef __cplusplus
}
#endif

#endif /* HAK_ALLOCATOR_INTERNAL_LOG_H */
