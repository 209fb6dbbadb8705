/* The Large tier (> 64 KiB, and anything the other tiers cannot serve): one mapping per
 * block through os_boundary, a BigCache of freed mappings keyed by size class, in-place
 * growth with mremap. Ownership of a pointer is found through a two-level page map that
 * the tier owns, so a foreign pointer is never dereferenced. */
#ifndef HAK_ALLOCATOR_LARGE_LARGE_H
#define HAK_ALLOCATOR_LARGE_LARGE_H

#include <stddef.h>
#include <stdint.h>

#include "allocator/internal/config.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Bytes in front of every large block (its header); also its alignment guarantee. */
#define HAK_LARGE_HEADER 64

/* Returns a block of at least n bytes aligned to `align` (a power of two >= 16), or NULL
 * with errno = ENOMEM (also for sizes no mapping can hold). With `zero` the block reads
 * as zeros (fresh mappings already do, so only reused ones are cleared). Thread-safe. */
void *hak_large_malloc(size_t n, size_t align, int zero);

/* Frees p if it is a live large block and returns 1; returns 0 (and touches nothing)
 * for any other pointer. */
int hak_large_free(void *p);

/* Usable bytes of a live large block, or 0 if p is not one. */
size_t hak_large_usable(const void *p);

/* Resizes a live large block to n bytes in place (mremap without moving), keeping the
 * contents. Returns p, or NULL (block unchanged, errno = ENOMEM) when the block cannot
 * change size where it is; the caller then allocates, copies and frees. */
void *hak_large_realloc(void *p, size_t n);

/* Releases cached mappings idle for HAKMEM_DECAY_MS (all of them with force). */
int hak_large_maintain(int force); /* 1: cached memory still waits for its decay */

/* In a fork child: unlocks the tier, dropping the BigCache if a thread was changing it. */
void hak_large_fork_child(void);

typedef struct {
  uint64_t live_blocks, live_bytes, cached_blocks, cached_bytes, cache_hits, cache_misses;
  uint64_t unreleased_bytes; /* freed mappings the kernel refused to unmap, retried */
  uint64_t resident_bytes;   /* of live blocks' and cached mappings, from mincore */
} hak_large_stats_t;
void hak_large_stats(hak_large_stats_t *out);

#ifdef __cplusplus
}
#endif

#endif /* HAK_ALLOCATOR_LARGE_LARGE_H */
