/* The Pool tier (1 KiB < size <= 64 KiB): the only header other layers may include.
 * Blocks are carved from spans inside per-thread arenas in the Pool half of the reserved
 * range; a page registry indexed by page number maps every page to its span, class and
 * owner. POOL_TLS_PHASE1=1 adds per-thread free lists per class (no lock, no atomic on
 * the fast path); POOL_TLS_PHASE1=0 serves every call from a shared sharded pool. */
#ifndef HAK_ALLOCATOR_POOL_POOL_H
#define HAK_ALLOCATOR_POOL_POOL_H

#include <stddef.h>
#include <stdint.h>

#include "allocator/internal/config.h"

#ifdef __cplusplus
extern "C" {
#endif

#define HAK_POOL_MIN 1024 /* sizes above this ... */
#define HAK_POOL_MAX (64 * 1024) /* ... up to this one are Pool's */
#define HAK_POOL_CLASSES 24
#define HAK_POOL_PAGE_SHIFT 16 /* the registry's unit: 64 KiB pages */
#define HAK_POOL_PAGE_SIZE ((size_t)1 << HAK_POOL_PAGE_SHIFT)

extern const uint32_t hak_pool_class_size[HAK_POOL_CLASSES];

/* Class of a size in (HAK_POOL_MIN, HAK_POOL_MAX]. */
unsigned hak_pool_class_of(size_t n);

/* Takes [base, base+size) of the reserved range (64 KiB aligned). Returns 0 or ENOMEM. */
int hak_pool_init(uintptr_t base, size_t size);

/* n in (HAK_POOL_MIN, HAK_POOL_MAX]; NULL with errno = ENOMEM when out of memory. */
void *hak_pool_malloc(size_t n);

/* Frees a block at offset `off` of the Pool region; pointers that are not live block
 * starts are counted as foreign (release) or abort with a message (debug). */
void hak_pool_free(void *p, uintptr_t off);

/* Usable size of the block at `off`, or 0 when it is not an allocated block. */
size_t hak_pool_usable(uintptr_t off);

void hak_pool_thread_exit(void);
/* Returns empty spans idle for HAKMEM_DECAY_MS to the OS (all of them with force). */
void hak_pool_maintain(int force);
void hak_pool_fork_prepare(void);
void hak_pool_fork_parent(void);
void hak_pool_fork_child(void);

/* The arena chunk sizes (bytes) a thread's arena grows through, as the options give:
 * writes up to `max` entries and returns how many. */
unsigned hak_pool_arena_steps(size_t *out, unsigned max);

typedef struct {
  uint64_t refills, remote_frees, pages_in_use, arena_chunks, foreign_frees;
} hak_pool_stats_t;
void hak_pool_stats(hak_pool_stats_t *out);

/* Registry entry of the page at `off` (tests): class, or -1 for a page outside any span. */
int hak_pool_registry_class(uintptr_t off);

#ifdef __cplusplus
}
#endif

#endif /* HAK_ALLOCATOR_POOL_POOL_H */
