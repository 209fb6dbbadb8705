/* The heap engine's life cycle, shared by Tiny and Pool: the only header of heap/.
 * A tier's thread heap embeds a hak_heap_t; the engine keeps every heap of the tier in
 * a registry, hands a thread a dead heap to adopt or a new one, retires a heap when its
 * thread exits, lets other threads' frees collect a dead heap's pending remote frees,
 * flushes heaps that stay dead past the decay, and repairs the registry in a fork child.
 * The tier supplies what differs through hak_heap_ops_t, on slow paths only.
 *
 * States (internal/remote.h): LIVE (a thread uses it) -> DEAD (its thread exited; on the
 * dead list, adoptable) -> LIVE again on adoption; DEAD <-> BUSY while another thread
 * collects it; LIVE or BUSY -> ORPHAN in a fork child (never adopted or collected).
 *
 * Reclaim of live heaps: memory freed into a heap whose owner no longer allocates must
 * still go back to the OS, so a purge pass may change another thread's heap: give the
 * remote frees waiting there back to their slabs and its empty slabs to the tier (the
 * tier's `reclaim`, which never touches the caches, the only thing fast paths use). It
 * does so only on a LIVE heap whose owner has made no slow path for a whole pass, and
 * only while the owner is outside its slow paths, by an asymmetric handshake that costs
 * the owner no atomic read-modify-write (a CAS per slow path cost pool_tls 5%):
 *   owner (hak_heap_own):  busy = 1;  if (request) { busy = 0; wait for !request; retry }
 *   purge:                 request = 1;  membarrier();  if (busy == 0) reclaim;  request = 0
 * membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) makes every thread of the process pass a
 * full barrier: an owner whose busy = 1 came before it is seen busy, one whose came after
 * sees the request. Without membarrier (an old kernel, a seccomp filter) live heaps are
 * not reclaimed. A heap turns DEAD only inside hak_heap_own, so a reclaim never overlaps
 * a dead heap's collection; reclaimers exclude each other with the registry's
 * reclaim_lock.
 *
 * Idle flush of live heaps: the caches, which the owner's fast paths use with no atomic
 * operation and no mark, are taken from a live thread only while the kernel shows it
 * blocked in a system call. Fast paths make no system call and slow paths mark the heap
 * busy, so such a thread is outside both, and stays so while it is blocked. The purge
 * thread watches each live heap (its caches' fingerprint and its slow paths); a heap
 * unused for the decay whose thread is blocked, as hak_os_thread_state shows, is parked:
 *   purge:  request = 1;  membarrier();  if (busy == 0) tls = the tier's parked heap;
 *           read the thread's state;  if (blocked in a call, busy == 0) flush;  request = 0
 *   owner:  its next call finds the parked heap (empty caches), takes a slow path, and
 *           there hak_heap_rebind waits for the request to go and binds the heap again.
 * The thread's TLS pointer is changed before its state is read: whatever it does after
 * that read, it does through the parked heap, and an operation it had begun before was
 * over before it blocked. The membarrier keeps the thread from exiting (its TLS going
 * away) while the request stands, as for a reclaim. A signal handler that blocks after
 * interrupting a fast path is the one way a thread can be blocked mid-operation: such a
 * handler runs with its signal blocked, so a thread that blocks a signal it did not
 * block when identified or rebound is left alone, as are calls a handler waits in
 * (sigsuspend, pause) and a vfork parent (whose child runs on its TLS). Off in
 * ThreadSanitizer builds (the kernel's ordering is invisible to it) and while the trace
 * variant logs frees (a write inside a fast path). */
#ifndef HAK_ALLOCATOR_HEAP_HEAP_H
#define HAK_ALLOCATOR_HEAP_HEAP_H

#include <pthread.h>
#include <sched.h>
#include <stddef.h>
#include <stdint.h>

#include "allocator/heap/cache.h"
#include "allocator/heap/slab.h"
#include "allocator/internal/config.h"
#include "allocator/internal/fork.h"
#include "allocator/internal/purge.h"
#include "allocator/internal/remote.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The engine's part of a thread heap. */
typedef struct hak_heap {
  int state;                  /* HAK_HEAP_*; changed with atomics (remote.h) */
  int busy;                   /* owner inside a slow-path change (internal/fork.h) */
  int request;                /* a reclaimer wants the heap (see the handshake above) */
  uint32_t slow_entries;      /* owner's slow paths so far (owner only, read racily) */
  uint32_t seen_entries;      /* slow_entries at the purge's previous pass (purge only) */
  uint32_t reclaimed_entries; /* slow_entries + 1 at the purge's last reclaim (purge only) */
  void *pending;              /* MPSC list of the tier's slabs with remote frees */
  struct hak_heap *next_all;  /* every heap of the registry (prepend only) */
  struct hak_heap *next_dead; /* the dead list (registry lock) */
  uint64_t died_ms;           /* when its thread exited (registry lock) */
  int flushed;                /* dead and flushed since (registry lock) */
  /* The idle flush (see above). */
  void **tls;             /* the owner thread's tier TLS pointer (bind) */
  int tid;                /* the owner's kernel thread id; 0 until identified (atomics) */
  uint32_t identify_at;   /* the slow_entries at which the owner records tid and blocked */
  int parked;             /* the owner's TLS was turned to the parked heap (atomics) */
  uint64_t blocked;       /* the signals the owner blocked when identified or rebound */
  uint64_t seen_use;      /* its caches' fingerprint and slow paths at the last look */
  uint64_t idle_since_ms; /* since when they have not changed (purge only) */
} hak_heap_t;

/* What a tier supplies. `tier` is a pointer to the tier's heap struct. */
typedef struct {
  size_t heap_size;            /* bytes of the tier's heap struct (zeroed when new) */
  size_t heap_offset;          /* offsetof(tier heap struct, its hak_heap_t) */
  void (*init)(void *tier);    /* a new heap, before any thread uses it */
  void (*bind)(void *tier);    /* makes it the calling thread's heap (the tier's TLS) */
  void (*prewarm)(void *tier); /* fills a new heap's caches at its thread's start */
  void (*drain)(void *tier);   /* moves pending remote frees to the heap's slabs and caches */
  void (*flush)(void *tier);   /* a heap dead for the decay: drain, then give every cached
                                  block back to its slab (unused since the heap's died_ms) */
  void (*reclaim)(void *tier); /* another thread holding the claim: drain into slabs only */
  /* The idle flush (NULL: none): the heap's owner is blocked and its TLS points at
   * `parked`; drain, give every cached block back to its slab and the empty current
   * slabs to the tier, dated from idle_since_ms. */
  void (*park)(void *tier, uint64_t idle_since_ms);
  uint64_t (*fingerprint)(void *tier); /* hak_cache_fingerprint of its caches */
  /* What a parked thread's TLS points at: a heap with empty caches that owns nothing, like
   * the empty heap of threads that never allocated, but told apart from it, so that only
   * the slow paths of parked threads look for a heap to bind again. */
  void *parked;
} hak_heap_ops_t;

/* A tier's table, from its heap type, its parked heap and hooks named heap_init, heap_bind,
 * heap_prewarm, heap_drain, heap_flush, heap_reclaim (each `static void (void *tier)`),
 * heap_park and heap_fingerprint. */
#define HAK_HEAP_OPS(tier_heap_type, parked_heap)                                       \
  {                                                                                     \
    .heap_size = sizeof(tier_heap_type), .heap_offset = offsetof(tier_heap_type, base), \
    .init = heap_init, .bind = heap_bind, .prewarm = heap_prewarm, .drain = heap_drain, \
    .flush = heap_flush, .reclaim = heap_reclaim, .park = heap_park,                    \
    .fingerprint = heap_fingerprint, .parked = (parked_heap)                            \
  }

/* What a kick of the purge thread counts for a dead heap (its caches) and, a sixteenth,
 * for a slab queued with remote frees: the thread starts after 4 MiB of kicks. */
#define HAK_PURGE_HEAP_BYTES ((uint64_t)1 << 20)

/* A heap's thread is identified for the idle flush (its tid and blocked signals: two
 * system calls) at its HAK_HEAP_IDENTIFY_AFTER-th slow path after attaching, not at the
 * attach: threads that live for a few slow paths never pay them (with them at the attach,
 * larson, which starts a thousand threads a second, ran 2% slower). A thread that made
 * fewer slow paths holds little in its caches, and is not watched. */
#define HAK_HEAP_IDENTIFY_AFTER 8
void hak_heap_identify(hak_heap_t *h);

/* The owner starts a slow-path change of its heap (nested calls count): marks it busy
 * (also for a fork from a signal handler) and, when a reclaimer has asked for the heap,
 * steps back until it is done (one drain of the heap's remote frees at most). The purge
 * thread, if a kick inside wants it, is started at the end, once the heap is consistent. */
HAK_INLINE void hak_heap_own(hak_heap_t *h) {
  hak_purge_defer_begin();
  hak_heap_enter(&h->busy);
  if (h->busy != 1) return;
  __atomic_store_n(&h->slow_entries, h->slow_entries + 1, __ATOMIC_RELAXED); /* purge reads */
  if (HAK_UNLIKELY(h->slow_entries == h->identify_at)) hak_heap_identify(h);
  while (HAK_UNLIKELY(__atomic_load_n(&h->request, __ATOMIC_ACQUIRE))) {
    __atomic_store_n(&h->busy, 0, __ATOMIC_RELEASE);
    while (__atomic_load_n(&h->request, __ATOMIC_ACQUIRE)) sched_yield();
    __atomic_store_n(&h->busy, 1, __ATOMIC_RELAXED);
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
  }
}

HAK_INLINE void hak_heap_disown(hak_heap_t *h) {
  hak_heap_leave(&h->busy);
  hak_purge_defer_end();
}

/* Fork child, before hak_heap_fork_child: whether the forking thread's heap can be kept
 * (no slow path of its own and no reclaim was asking for it at the fork). */
HAK_INLINE int hak_heap_intact_in_child(const hak_heap_t *h) {
  return h->busy == 0 && h->request == 0;
}

/* One per tier. */
typedef struct {
  const hak_heap_ops_t *ops;
  pthread_mutex_t lock;         /* the lists below */
  hak_heap_t *all;              /* every heap ever made (read without the lock: prepend only) */
  hak_heap_t *dead;             /* adoptable heaps */
  pthread_mutex_t reclaim_lock; /* one reclaimer of live heaps at a time */
  pthread_key_t key;            /* its destructor retires a thread's heap */
  uint64_t watch_due_ms;        /* the next look at live heaps' threads (reclaim_lock) */
  uint64_t parks;               /* idle heaps whose caches were flushed (relaxed atomics) */
} hak_heap_registry_t;

/* The tier heap around an engine part, and back. */
HAK_INLINE void *hak_heap_tier(const hak_heap_registry_t *r, hak_heap_t *h) {
  return (char *)h - r->ops->heap_offset;
}
HAK_INLINE hak_heap_t *hak_heap_of(const hak_heap_registry_t *r, void *tier) {
  return (hak_heap_t *)((char *)tier + r->ops->heap_offset);
}

/* Sets the registry up; `on_thread_exit(tier)` runs at the exit of a thread that has a
 * heap. Returns 0 or ENOMEM. Called once, before any other function of the registry. */
int hak_heap_registry_init(hak_heap_registry_t *r, const hak_heap_ops_t *ops,
                           void (*on_thread_exit)(void *tier));

/* A heap for the calling thread: a dead one adopted with its slabs and caches, else a
 * new one. It is made LIVE, the thread's (`bind`), registered for thread exit, drained of
 * remote frees that came while it was dead, and pre-warmed if new (with PREWARM=1).
 * Returns the tier heap, or NULL when out of memory. */
void *hak_heap_attach(hak_heap_registry_t *r);

/* The calling thread's slow path found its tier TLS at the parked heap: if its heap `tier`
 * (NULL: the thread's registered one, pthread_getspecific) is parked, waits for a flush
 * in progress and binds it again. Returns the heap bound, or NULL (then the thread
 * attaches one). */
void *hak_heap_rebind(hak_heap_registry_t *r, void *tier);

/* A tier's slow path found its TLS (`*tls`) at the parked heap: the thread's heap bound
 * again, or, if it has none to rebind, `empty` (now in its TLS too). Out of line: inlined,
 * the call made the slow free save registers on every call (a third more instructions
 * in it under larson, whose frees are mostly remote). */
HAK_COLD void *hak_heap_unpark(hak_heap_registry_t *r, void **tls, void *empty);

/* The thread of heap `tier` is exiting and has stopped using it (the caller has done the
 * tier's own last work): it becomes DEAD and adoptable, and remote frees that raced with
 * the caller's drain are collected now. */
void hak_heap_retire(hak_heap_registry_t *r, void *tier);

/* Remote frees are batched in the freeing thread, per destination slab, so that a
 * thread freeing other threads' blocks pays about what a local free costs: a link write
 * into the batch's last block (it grows at its end, so that it keeps the order of the
 * frees), no atomic operation. A batch goes to its slab's remote queue in one
 * exchange (hak_remote_push_chain) when it holds HAK_REMOTE_BATCH_BLOCKS blocks or
 * HAK_REMOTE_BATCH_BYTES bytes, when a free for another slab needs its slot, and when the
 * thread enters an allocation slow path, calls malloc_trim or exits. What a thread that
 * stops for good leaves in its buffer is bounded: HAK_REMOTE_SLOTS batches of at most
 * HAK_REMOTE_BATCH_BYTES (64 KiB), which keep at most HAK_REMOTE_SLOTS slabs or spans
 * from going back to the OS: blocks over 2 KiB are never held (a batch of one goes at
 * once), so those are slabs and spans of 64 KiB, 1 MiB in all. (64 slots of 16 KiB kept
 * 2.5 MB more in RAM after a burst freed remotely.) A fork child starts with an empty
 * buffer (the parent's may have been mid-change; its blocks stay unused there). */
#define HAK_REMOTE_SLOTS 16 /* a power of two: hak_remote_slot_of takes the top 4 bits */
#define HAK_REMOTE_BATCH_BLOCKS 64
#define HAK_REMOTE_BATCH_BYTES (4 * 1024)

typedef struct {
  hak_slab_t *slab;       /* where the batch goes; NULL: the slot is free. Its owner and
                             remote line are read when the batch goes: a slab with blocks
                             out keeps its owner. */
  void *head, *tail;      /* the batch, linked as a free list; tail's link unset */
  uint32_t count, limit;  /* blocks in it; how many make it go */
  hak_heap_registry_t *r; /* the slab's tier */
} hak_remote_slot_t;

typedef struct {
  hak_remote_slot_t slot[HAK_REMOTE_SLOTS];
  uint32_t used; /* slots holding a batch */
  int armed;     /* the thread-exit flush is registered */
} hak_remote_buf_t;

extern HAK_HIDDEN HAK_TLS hak_remote_buf_t hak_remote_buf;

/* A block of `size` bytes was freed into `slab` of tier r by a thread that does not own it
 * (the slab's owner is a LIVE, DEAD or ORPHAN heap of r): it joins the calling thread's
 * batch for that slab. A batch that goes queues the slab at its owner when the slab was not
 * queued, and collects the owner if it is dead. */
void hak_heap_remote_free_slow(hak_heap_registry_t *r, hak_slab_t *slab, void *block, size_t size,
                               hak_remote_slot_t *e);

/* The slot of `slab` in a thread's buffer: slab headers are 64-byte aligned, so the bits
 * above are mixed into a slot number. */
HAK_INLINE hak_remote_slot_t *hak_remote_slot_of(const hak_slab_t *slab) {
  return &hak_remote_buf.slot[(((uintptr_t)slab >> 6) * 0x9e3779b97f4a7c15ull) >> 60];
}

HAK_INLINE void hak_heap_remote_free(hak_heap_registry_t *r, hak_slab_t *slab, void *block,
                                     size_t size) {
  hak_remote_slot_t *e = hak_remote_slot_of(slab);
  if (HAK_LIKELY(e->slab == slab)) { /* the common case: one more block for the batch */
    hak_link_write(e->tail, block);
    e->tail = block;
    if (HAK_LIKELY(++e->count < e->limit)) return;
  }
  hak_heap_remote_free_slow(r, slab, block, size, e); /* full, or another slab's slot */
}

/* Sends every batch of the calling thread's buffer. */
void hak_heap_remote_flush_all(void);
HAK_INLINE void hak_heap_remote_flush(void) {
  if (HAK_UNLIKELY(hak_remote_buf.used != 0)) hak_heap_remote_flush_all();
}

/* Fork child: the forking thread's buffer is dropped (see above). */
void hak_heap_remote_fork_child(void);

/* Batches sent and whole-buffer flushes so far, for the statistics. */
void hak_heap_remote_counts(uint64_t *batches, uint64_t *flushes);

/* Flushes dead heaps idle for the decay (all of them with force): their cached blocks go
 * back to their slabs, so empty slabs can go back to the OS. Returns 1 while a dead heap
 * still waits for its flush. */
int hak_heap_flush_dead(hak_heap_registry_t *r, uint64_t now_ms, int force);

/* The purge's pass over live heaps (see the claim above): reclaims the remote frees of
 * heaps whose owners made no slow path since the previous pass (of every live heap not
 * in a slow path, with force), and parks the heaps whose threads have been blocked for
 * the decay (every blocked one, with force; see the idle flush above). Returns
 * HAK_PURGE_WAITING while some live heap has remote frees waiting, plus
 * HAK_PURGE_WATCHING while the purge thread watches live heaps for the idle flush. */
int hak_heap_reclaim_idle(hak_heap_registry_t *r, int force);

/* Fork child, before hak_heap_fork_child, when the forking thread's TLS points at the
 * parked heap: its heap bound again if no flush was going on at the fork, else NULL (it
 * becomes an orphan). */
void *hak_heap_fork_unpark(hak_heap_registry_t *r);

/* Fork child: re-initialises the lock, rebuilds the dead list from heaps really dead,
 * and makes every other heap but `self` (the forking thread's, or NULL) an orphan. */
void hak_heap_fork_child(hak_heap_registry_t *r, void *self);

/* Debug builds: every link of the batch head .. tail of n blocks is checked (inside its
 * slab, n blocks to the tail), and the descriptor's word gets back the fill of a freed
 * block, which the hand-out checks for writes after free. */
HAK_INLINE void hak_heap_check_batch(void *head, void *tail, uint32_t n, uintptr_t lo,
                                     uintptr_t len) {
  void *b = head;
  for (uint32_t i = 1; i < n; i++) {
    void *nb = hak_link_read(b);
    if (nb == NULL || hak_slab_link_bad(nb, lo, len)) {
      hak_link_corrupt("corrupted remote free queue link in block", b);
    }
    b = nb;
  }
  if (b != tail) hak_link_corrupt("corrupted remote free queue link in block", head);
  hak_fill_bytes((char *)head + sizeof(void *), HAK_FILL_FREE, sizeof(void *));
}

/* Owner (or the collector holding the heap BUSY): takes every slab queued at heap h and
 * drains each one's remote queue before anyone pops that slab's free list, so a block is
 * never on both (the use-after-free of the allocator hakmem descends from). A slab's queue
 * goes whole to put(tier, slab, head, tail, count): a chain linked as a free list is
 * (internal/link.h), oldest batch first (the queue is a stack: its batches are relinked
 * on the way, a write to each batch's tail, which the walk reads anyway, so that blocks
 * keep the order they were freed in, see hak_slab_take_free), which the tier splices
 * onto the slab's free list or a thread cache
 * (a put per block returned each one to its slab and the next refill took it back: half
 * of a consumer-fed producer's allocator work). The queue is read batch by batch through
 * the descriptors (internal/remote.h): each one's tail must lie inside the slab, whose
 * blocks lie in [lo, lo + len) as bounds(slab) says, the lengths add up to at most the
 * slab's capacity, and the link from a tail to the next batch is checked; the links
 * inside a batch are checked where they are followed (the tier's put, a refill), and by
 * debug builds here. Walking every block here made the owner wait for each line the
 * freeing thread had written, one after another: a consumer-fed producer spent a third
 * of its time in that walk. */
HAK_INLINE void hak_heap_drain(hak_heap_t *h, void *tier,
                               void (*put)(void *tier, hak_slab_t *slab, void *head, void *tail,
                                           uint32_t count),
                               void (*bounds)(hak_slab_t *slab, uintptr_t *lo, uintptr_t *len)) {
  hak_slab_t *s = (hak_slab_t *)hak_pending_take(&h->pending);
  while (s) {
    hak_slab_remote_t *r = hak_slab_remote(s);
    hak_slab_t *next = (hak_slab_t *)r->pending_next;
    uintptr_t lo, len;
    bounds(s, &lo, &len);
    void *b = hak_remote_take(&r->remote), *head = NULL, *tail = NULL;
    uint32_t count = 0;
    while (b) { /* newest batch first: relinked oldest first, as the blocks were freed */
      uint32_t n;
      void *t = hak_remote_desc_read(b, &n);
      count += n;
      /* A NULL tail or an empty or overlong batch would be followed (or loop) even
       * without hardening. */
      if (t == NULL || n == 0 || HAK_UNLIKELY(count > s->capacity) ||
          hak_slab_link_bad(t, lo, len)) {
        hak_link_corrupt("corrupted remote free queue link in block", b);
      }
      if (HAK_CHECKS) hak_heap_check_batch(b, t, n, lo, len);
      void *nb = hak_link_read(t);
      if (hak_slab_link_bad(nb, lo, len)) {
        hak_link_corrupt("corrupted remote free queue link in block", t);
      }
      hak_link_write(t, head);
      if (!tail) tail = t;
      head = b;
      b = nb;
    }
    if (head) put(tier, s, head, tail, count);
    s = next;
  }
}

/* Pops blocks off a thread cache until its room is `room` (an overflow's trim) and gives
 * them back through `put`, the drain's hook, a run at a time: blocks popped one after
 * another from the same slab (slab_of says which) are already linked in that order, a
 * cache's links being a slab list's, so each run goes as one chain. A program freeing in
 * bulk returns a run of neighbours per slab instead of a block at a time (allocating and
 * freeing 4 MiB of each of three Tiny sizes: 178 instructions a block, 130 this way).
 * Returns the slab of the last block popped (NULL: none). */
HAK_INLINE hak_slab_t *hak_cache_trim(hak_cache_t *c, int32_t room, uintptr_t mask, void *tier,
                                      hak_slab_t *(*slab_of)(const void *block),
                                      void (*put)(void *tier, hak_slab_t *slab, void *head,
                                                  void *tail, uint32_t count)) {
  hak_slab_t *last = NULL;
  void *head = NULL, *tail = NULL;
  uint32_t count = 0;
  while (c->room < room) {
    void *b = hak_cache_pop(c, mask);
    HAK_ASSERT(b != NULL, "a thread cache holds fewer blocks than it counts at", c);
    hak_slab_t *s = slab_of(b);
    if (s != last) {
      if (count) put(tier, last, head, tail, count);
      last = s;
      head = b;
      count = 0;
    }
    tail = b;
    count++;
  }
  if (count) put(tier, last, head, tail, count);
  return last;
}

#ifdef __cplusplus
}
#endif

#endif /* HAK_ALLOCATOR_HEAP_HEAP_H */
