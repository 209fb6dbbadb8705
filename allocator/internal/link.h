/* Free-list links of the heap engine, stored encoded (HAKMEM_HARDEN=1, the default).
 * Every list of free blocks Tiny and Pool keep — thread caches, slab free lists, remote
 * queues — links blocks through their first word. A program that writes into a freed
 * block (a use after free, an overflow from the block before) would otherwise choose
 * where the next-but-one malloc points. So a link is stored as
 *     next ^ key ^ (address of the link)
 * with a per-process random key: a plain pointer written there decodes to noise, and a
 * link copied to another block decodes to noise too. Each link is checked when it is
 * followed: a thread cache's next block must sit in the same size class's part of its
 * tier (Tiny: the same grid column), 16-byte aligned, below 2^47; a slab free list's and
 * a remote queue's in the same slab. A link that fails aborts with one `hakmem:` line
 * instead of being followed (release builds too). Noise passes the cache check with
 * probability 2^-26 in Tiny, 2^-21 in Pool.
 *
 * With HAKMEM_HARDEN=0 the key and the masks are 0: links hold next ^ address and no
 * check fires. The key never changes after initialisation, so a fork child keeps it.
 * Builds with HARDENING=0 (the `noharden` variant, internal/config.h) store links plain
 * and compile every link check out (these and hak_slab_link_bad), and the fast frees'
 * cache-head and alignment tests: the instructions the hardening costs. */
#ifndef HAK_ALLOCATOR_INTERNAL_LINK_H
#define HAK_ALLOCATOR_INTERNAL_LINK_H

#include <stddef.h>
#include <stdint.h>

#include "allocator/internal/config.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Separate variables, not a struct: the fast paths then use each as a direct
 * RIP-relative operand (`xor hak_link_key(%rip), %reg`) instead of first loading the
 * struct's address, one instruction less on each side of a pair. */
extern HAK_HIDDEN uintptr_t hak_link_key; /* random, odd bits everywhere; 0 without hardening */
extern HAK_HIDDEN uintptr_t
    hak_link_tiny_mask; /* bits in which a Tiny cache link and its block agree */
extern HAK_HIDDEN uintptr_t hak_link_pool_mask; /* the same for Pool */
extern HAK_HIDDEN int hak_link_on;              /* HAKMEM_HARDEN */

/* Bits no user-space block address has (x86-64 and arm64 with 47/48-bit user space):
 * a decoded link with any of them set is noise. */
#define HAK_LINK_HIGH_BITS (~(((uintptr_t)1 << 47) - 1))

/* Sets the key and masks once, at initialisation, before any link is written. */
void hak_links_init(uintptr_t secret, int harden, uintptr_t tiny_mask, uintptr_t pool_mask);

/* A link lives in a free block, which ASan builds keep poisoned: there the accessors are
 * out-of-line functions ASan does not instrument (HAK_NO_ASAN, config.h). */
#if HAK_ASAN_BUILD
#define HAK_LINK_ACCESS static HAK_NO_ASAN __attribute__((unused))
#else
#define HAK_LINK_ACCESS HAK_INLINE
#endif

HAK_LINK_ACCESS void hak_link_write(void *block, const void *next) {
  if (!HAK_HARDENING) {
    *(const void **)block = next;
    return;
  }
  /* In this order the key is a memory operand of the last xor: one instruction fewer on
   * the free fast path than key ^ block first (a load and an xor). */
  uintptr_t v = (uintptr_t)next ^ (uintptr_t)block;
  *(uintptr_t *)block = v ^ hak_link_key;
}

HAK_LINK_ACCESS void *hak_link_read(const void *block) {
  if (!HAK_HARDENING) return *(void *const *)block;
  return (void *)(*(const uintptr_t *)block ^ hak_link_key ^ (uintptr_t)block);
}

/* Names the tier and class of a block for a message ("tiny class 3"), into buf; set by
 * the front end at initialisation (the engine does not know the tiers' layouts). */
typedef const char *(*hak_link_where_fn)(const void *block, char *buf, size_t cap);
void hak_links_set_where(hak_link_where_fn where);

/* Aborts with "hakmem: <what> <block> (<tier> class <n>)": a link that failed its check
 * (what: "corrupted free list link in block", say). */
__attribute__((noreturn)) HAK_COLD void hak_link_corrupt(const char *what, const void *block);

/* A block freed while it is the first of its thread cache: "double free of ..." and
 * abort, unless HAKMEM_HARDEN=0 (then it returns and the block is pushed again). */
HAK_COLD void hak_link_double_free(const void *block);

/* Whether `next`, read from `block`'s link, fails the check of a list whose blocks agree
 * in the bits of `mask` (NULL, the end of a list, always passes). */
HAK_INLINE int hak_link_bad(const void *block, const void *next, uintptr_t mask) {
  return HAK_HARDENING && HAK_UNLIKELY((((uintptr_t)next ^ (uintptr_t)block) & mask) != 0) &&
         next != NULL;
}

#ifdef __cplusplus
}
#endif

#endif /* HAK_ALLOCATOR_INTERNAL_LINK_H */
