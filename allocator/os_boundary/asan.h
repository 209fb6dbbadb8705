/* AddressSanitizer builds (--config=asan, --config=fuzz): hakmem marks the bytes of its
 * blocks the way ASan's own allocator does, so a program that uses hakmem through the
 * hak_* API gets ASan reports for use after free and overflow inside hakmem's blocks.
 *
 * Who marks what (every other build compiles all of it to nothing):
 * - A tier poisons a slab's (span's) blocks when a heap takes it fresh (none handed
 *   out) and each block when it comes back (freed), and unpoisons a whole block when it
 *   hands it out; Large poisons spans as they are freed. Tier-level callers (the unit
 *   tests) so see whole blocks, as in every other build. Unmapped memory is unpoisoned:
 *   whoever maps the range next starts clean.
 * - The front narrows a block handed out for n bytes to n: the tail up to the usable
 *   size stays poisoned, so an overflow past the request is reported too (granularity 8
 *   bytes, as in ASan). malloc_usable_size unpoisons the whole block: a program that
 *   asked may use it all. realloc unpoisons the old block before it copies or moves it.
 * - The allocator's own accesses to free blocks (the encoded links, debug fills and
 *   their checks) go through functions ASan does not instrument (HAK_NO_ASAN, config.h).
 * - Shadow memory costs an eighth of what it describes: ranges of a megabyte or more are
 *   made addressable by giving their shadow pages back to the kernel (they read as
 *   zero) rather than writing zeros, and so is the range of a mapping hakmem unmaps, so
 *   that whoever maps it next starts clean. A fresh mapping of gigabytes (a calloc the
 *   program touches in three places) then costs no shadow at all; writing it cost a
 *   fuzzing run 2 GB. The one system call this needs is made here, in os_boundary.
 * The fast paths are off in these builds (every malloc and free takes the slow path of
 * its tier, as in debug builds): speed is not what they are for.
 *
 * ASan calls the faults "use-after-poison"; the address it reports lies in a hakmem
 * block freed, never handed out, or past the size requested. */
#ifndef HAK_ALLOCATOR_OS_BOUNDARY_ASAN_H
#define HAK_ALLOCATOR_OS_BOUNDARY_ASAN_H

#include <stddef.h>

#include "allocator/internal/config.h"

#if HAK_ASAN_BUILD
#include <sanitizer/asan_interface.h>
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Makes [p, p + n) addressable; from HAK_ASAN_CLEAR_MIN bytes on by dropping the shadow
 * pages wholly inside it (os.c). Nothing in other builds. */
void hak_asan_clear(const void *p, size_t n);
#define HAK_ASAN_CLEAR_MIN ((size_t)1 << 20)

static inline void hak_asan_poison(const void *p, size_t n) {
#if HAK_ASAN_BUILD
  if (p && n) __asan_poison_memory_region(p, n);
#else
  (void)p;
  (void)n;
#endif
}

static inline void hak_asan_unpoison(const void *p, size_t n) {
#if HAK_ASAN_BUILD
  if (!p || !n) return;
  if (n >= HAK_ASAN_CLEAR_MIN) {
    hak_asan_clear(p, n);
  } else {
    __asan_unpoison_memory_region(p, n);
  }
#else
  (void)p;
  (void)n;
#endif
}

/* Block p, usable for `usable` bytes, handed out for n <= usable: [p, p + n) unpoisoned,
 * the rest poisoned (the front's narrowing). */
static inline void hak_asan_narrow(const void *p, size_t n, size_t usable) {
  if (!HAK_ASAN || p == NULL) return;
  hak_asan_unpoison(p, n);
  if (usable > n) hak_asan_poison((const char *)p + n, usable - n);
}

#ifdef __cplusplus
}
#endif

#endif /* HAK_ALLOCATOR_OS_BOUNDARY_ASAN_H */
