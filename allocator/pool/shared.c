/* The shared sharded pool of POOL_TLS_PHASE1=0: eight heaps, each behind a mutex, no
 * thread caches; a thread sticks to one shard, and a free locks the shard that owns the
 * span. Correct and slower, kept for comparison and memory-tight use. */
#include <pthread.h>
#include <stddef.h>
#include <string.h>

#include "allocator/internal/fork.h"
#include "allocator/internal/purge.h"
#include "allocator/internal/trace.h"
#include "allocator/pool/pool_internal.h"

#define SHARDS 8

typedef struct {
  hak_pool_heap_t heap; /* first: a span's owner pointer is the shard's address */
  pthread_mutex_t lock; /* guards the heap */
} shard_t;

static __attribute__((aligned(64))) shard_t shards[SHARDS]; /* 64: a cache line of its own each */
static HAK_TLS unsigned shard_of_thread; /* 1-based; 0 until the thread's first call */
static unsigned shard_next;

/* Stands in, in a fork child, for a shard that a thread was changing at the fork: its
 * spans are handed to this heap, which never serves or takes blocks. */
static __attribute__((aligned(64))) hak_pool_heap_t orphan_shard = {.base.state = HAK_HEAP_ORPHAN};

void hak_pool_shared_init(void) {
  for (unsigned i = 0; i < SHARDS; i++) {
    pthread_mutex_init(&shards[i].lock, NULL);
    shards[i].heap.base.state = HAK_HEAP_LIVE;
  }
}

static shard_t *my_shard(void) {
  if (shard_of_thread == 0) {
    shard_of_thread = __atomic_fetch_add(&shard_next, 1, __ATOMIC_RELAXED) % SHARDS + 1;
  }
  return &shards[shard_of_thread - 1];
}

void *hak_pool_shared_malloc(unsigned cls) {
  shard_t *sh = my_shard();
  hak_pool_list_t one = {NULL, 1, 1, 0}; /* room for one block */
  HAK_TRACE_ROUTE(HAK_ROUTE_POOL_SHARED, 0, 0);
  hak_purge_defer_begin(); /* a new thread's first malloc may come to this shard */
  pthread_mutex_lock(&sh->lock);
  sh->heap.refills++;
  sh->heap.base.slow_entries++; /* activity, for the trim below */
  hak_pool_fill(&sh->heap, cls, &one, 1);
  pthread_mutex_unlock(&sh->lock);
  hak_purge_defer_end();
  return one.head && HAK_CHECKS ? hak_pool_checked_alloc(one.head, cls) : one.head;
}

void hak_pool_shared_free(hak_pool_span_t *s, void *p) {
  hak_pool_heap_t *h = s->owner;
  HAK_TRACE_ROUTE(HAK_ROUTE_POOL_SHARED, p, 1);
  if (h->base.state == HAK_HEAP_ORPHAN) return; /* a fork child's distrusted shard: left alone */
  shard_t *sh = (shard_t *)h;
  hak_purge_defer_begin();
  pthread_mutex_lock(&sh->lock);
  h->base.slow_entries++;
  hak_pool_return_block(h, s, p);
  pthread_mutex_unlock(&sh->lock);
  hak_purge_defer_end();
}

/* A shard whose lock was held at the fork: its spans become the orphan's (their blocks
 * stay where they are), and the shard starts empty. */
static void replace_shard(shard_t *sh) {
  uintptr_t pages = hak_pool_geom.top >> HAK_POOL_PAGE_SHIFT;
  for (uintptr_t page = 0; page < pages; page++) {
    hak_pool_span_t *s = &hak_pool_geom.registry[page];
    if (s->kind == HAK_POOL_HEAD && s->owner == &sh->heap)
      hak_pool_span_set_owner(s, &orphan_shard);
  }
  memset(&sh->heap, 0, sizeof sh->heap);
  sh->heap.base.state = HAK_HEAP_LIVE;
}

void hak_pool_shared_fork_child(void) {
  for (unsigned i = 0; i < SHARDS; i++) {
    if (hak_fork_child_reset_lock(&shards[i].lock)) replace_shard(&shards[i]);
  }
}

/* A shard no call has used since the previous pass (any shard, with force) gives its
 * empty spans back: trimming a busy one would only make it take them back at once. */
void hak_pool_shared_trim(int force) {
  for (unsigned i = 0; i < SHARDS; i++) {
    hak_heap_t *b = &shards[i].heap.base;
    pthread_mutex_lock(&shards[i].lock);
    if (b->state == HAK_HEAP_LIVE && (force || b->slow_entries == b->seen_entries)) {
      hak_pool_heap_trim(&shards[i].heap);
    }
    b->seen_entries = b->slow_entries;
    pthread_mutex_unlock(&shards[i].lock);
  }
}

void hak_pool_shared_stats(hak_pool_stats_t *out) {
  for (unsigned i = 0; i < SHARDS; i++) hak_pool_add_heap_stats(&shards[i].heap, out);
}
