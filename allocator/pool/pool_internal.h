/* Private to the Pool tier (pool.c and shared.c): the span and list operations the
 * sharded path (POOL_TLS_PHASE1=0, shared.c) shares with the thread-cache path. */
#ifndef HAK_ALLOCATOR_POOL_POOL_INTERNAL_H
#define HAK_ALLOCATOR_POOL_POOL_INTERNAL_H

#include "allocator/pool/pool.h"

/* Moves up to `want` blocks of `cls` onto list l (span free lists first, then carving);
 * returns how many. Owner only (or the shard lock held). */
uint32_t hak_pool_fill(hak_pool_heap_t *h, unsigned cls, hak_pool_list_t *l, uint32_t want);

/* Block b goes back onto span s of heap h; an emptied span is released. Same rule. */
void hak_pool_return_block(hak_pool_heap_t *h, hak_pool_span_t *s, void *b);

/* Empty current spans and the spares of heap h go to the arena's free list, where the
 * decay finds them. Same rule. */
void hak_pool_heap_trim(hak_pool_heap_t *h);

/* Makes h (NULL: none) the owner of span s: its first page's entry and every page's owner
 * word. The owner (or the shard lock held), or the fork child. */
void hak_pool_span_set_owner(hak_pool_span_t *s, hak_pool_heap_t *h);

/* Debug builds: checks a block about to be handed out and marks it allocated. */
void *hak_pool_checked_alloc(void *p, unsigned cls);

/* Adds a heap's counters to *out. */
void hak_pool_add_heap_stats(const hak_pool_heap_t *h, hak_pool_stats_t *out);

/* The sharded path (shared.c). */
void hak_pool_shared_init(void);
void *hak_pool_shared_malloc(unsigned cls);
void hak_pool_shared_free(hak_pool_span_t *s, void *p);
void hak_pool_shared_fork_child(void);
void hak_pool_shared_stats(hak_pool_stats_t *out);
void hak_pool_shared_trim(int force); /* hak_pool_heap_trim of idle shards */

#endif /* HAK_ALLOCATOR_POOL_POOL_INTERNAL_H */
