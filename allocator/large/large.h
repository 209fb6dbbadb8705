/* The Large tier (> 64 KiB, and anything the other tiers cannot serve): a page heap in a
 * region of the claimed range, cut into arenas (a thread uses one, a free goes to the
 * block's), with free spans coalesced and kept committed until the decay; blocks the
 * region cannot hold get a mapping of their own. Ownership of a pointer is found through
 * a two-level page map that the tier owns, so a foreign pointer is never dereferenced. */
#ifndef HAK_ALLOCATOR_LARGE_LARGE_H
#define HAK_ALLOCATOR_LARGE_LARGE_H

#include <stddef.h>
#include <stdint.h>

#include "allocator/internal/config.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Gives the tier the region [base, base + size) of the claimed range (nothing mapped
 * there yet) for its arenas. Before this call, or without it, every block is a mapping of
 * its own. Called once, at initialisation. */
void hak_large_init(uintptr_t base, size_t size);

/* Returns a block of at least n bytes aligned to `align` (a power of two >= 16), or NULL
 * with errno = ENOMEM (also for sizes no mapping can hold). With `zero` the block reads
 * as zeros (fresh mappings already do, so only reused ones are cleared). Thread-safe. */
void *hak_large_malloc(size_t n, size_t align, int zero);

/* Frees p if it is a live large block and returns 1; returns -1 when p is a block freed
 * already (it lies in a free span of the region, or starts a freed mapping still cached),
 * 0 for any other pointer (in both cases nothing is touched). */
int hak_large_free(void *p);

/* Whether p is a block freed already, as hak_large_free's -1 says. */
int hak_large_freed(const void *p);

/* Usable bytes of a live large block, or 0 if p is not one. */
size_t hak_large_usable(const void *p);

/* Resizes a live large block to n bytes in place (mremap without moving), keeping the
 * contents. Returns p, or NULL (block unchanged, errno = ENOMEM) when the block cannot
 * change size where it is; the caller then allocates, copies and frees. */
void *hak_large_realloc(void *p, size_t n);

/* Gives back the pages of free spans and cached mappings idle for HAKMEM_DECAY_MS (all
 * of them with force). */
int hak_large_maintain(int force); /* 1: cached memory still waits for its decay */

/* In a fork child: unlocks the tier; an arena a thread was changing is not used again. */
void hak_large_fork_child(void);

typedef struct {
  uint64_t live_blocks, live_bytes;     /* blocks in use, and their usable bytes */
  uint64_t cached_blocks, cached_bytes; /* freed and not yet given back (dirty free spans,
                                           whole: with the pages span_fill moved out) */
  uint64_t cache_hits;                  /* blocks served from free spans or cached mappings */
  uint64_t cache_misses;                /* blocks that needed an arena to grow or a new mapping */
  uint64_t moved_bytes;       /* freed pages moved into new blocks in place of fresh ones */
  uint64_t mapped_bytes;      /* arenas' mapped extent (live, free and purged spans) */
  uint64_t huge_blocks;       /* live blocks with a mapping of their own */
  int64_t os_committed_bytes; /* the arenas' share of the OS counters' commit - decommit */
  uint64_t unreleased_bytes;  /* freed mappings the kernel refused to unmap, retried */
  uint64_t resident_bytes;    /* of arenas, live mappings and cached ones, from mincore */
} hak_large_stats_t;
void hak_large_stats(hak_large_stats_t *out);

#ifdef __cplusplus
}
#endif

#endif /* HAK_ALLOCATOR_LARGE_LARGE_H */
