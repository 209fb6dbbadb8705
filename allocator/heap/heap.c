/* The heap life cycle of heap.h: registry, adoption, retirement, collection by other
 * threads, decay flushes and the fork child's repair. */
#include "allocator/heap/heap.h"

#include <errno.h>
#include <string.h>
#include <sys/syscall.h>

#include "allocator/internal/clock.h"
#include "allocator/internal/options.h"
#include "allocator/internal/purge.h"
#include "allocator/os_boundary/os.h"

HAK_TLS hak_remote_buf_t hak_remote_buf;
static pthread_key_t remote_key; /* its destructor sends an exiting thread's batches */
static pthread_once_t remote_once = PTHREAD_ONCE_INIT;
static uint64_t remote_batches, remote_flushes;

static void remote_exit(void *arg) {
  (void)arg;
  hak_remote_buf.armed = 0; /* a free by a later destructor arms it again */
  hak_heap_remote_flush_all();
}

static void remote_key_create(void) { pthread_key_create(&remote_key, remote_exit); }

int hak_heap_registry_init(hak_heap_registry_t *r, const hak_heap_ops_t *ops,
                           void (*on_thread_exit)(void *tier)) {
  pthread_once(&remote_once, remote_key_create);
  r->ops = ops;
  pthread_mutex_init(&r->lock, NULL);
  pthread_mutex_init(&r->reclaim_lock, NULL);
  r->all = r->dead = NULL;
  return pthread_key_create(&r->key, on_thread_exit) == 0 ? 0 : ENOMEM;
}

void *hak_heap_attach(hak_heap_registry_t *r) {
  hak_heap_t *h = NULL;
  int created = 0;
  pthread_mutex_lock(&r->lock);
  for (hak_heap_t **pp = &r->dead; *pp; pp = &(*pp)->next_dead) {
    if (hak_heap_transition(&(*pp)->state, HAK_HEAP_DEAD, HAK_HEAP_LIVE)) {
      h = *pp;
      __atomic_store_n(pp, h->next_dead, __ATOMIC_RELAXED); /* flush_dead peeks at r->dead */
      h->flushed = 0;
      break;
    }
  }
  if (!h) {
    void *tier;
    if (hak_os_meta_alloc(r->ops->heap_size, &tier) == 0) {
      r->ops->init(tier);
      h = hak_heap_of(r, tier);
      h->state = HAK_HEAP_LIVE;
      h->next_all = r->all;
      /* Released after the link: a fork child walks this list whatever the lock says. */
      __atomic_store_n(&r->all, h, __ATOMIC_RELEASE);
      created = 1;
    }
  }
  pthread_mutex_unlock(&r->lock);
  if (!h) return NULL;
  void *tier = hak_heap_tier(r, h);
  __atomic_store_n(&h->tid, 0, __ATOMIC_RELAXED); /* another thread's, if adopted */
  h->identify_at = h->slow_entries + HAK_HEAP_IDENTIFY_AFTER;
  __atomic_store_n(&h->parked, 0, __ATOMIC_RELAXED);
  r->ops->bind(tier);
  pthread_setspecific(r->key, tier);
  hak_heap_own(h);
  r->ops->drain(tier);
  if (created && HAK_PREWARM) r->ops->prewarm(tier);
  hak_heap_disown(h);
  return tier;
}

void hak_heap_identify(hak_heap_t *h) {
  h->blocked = hak_os_thread_blocked();
  __atomic_store_n(&h->tid, hak_os_thread_id(), __ATOMIC_RELEASE); /* blocked before it */
}

void *hak_heap_rebind(hak_heap_registry_t *r, void *tier) {
  if (!r->ops || (!tier && !(tier = pthread_getspecific(r->key)))) return NULL;
  hak_heap_t *h = hak_heap_of(r, tier);
  if (!__atomic_load_n(&h->parked, __ATOMIC_ACQUIRE)) return NULL;
  hak_heap_own(h); /* a flush in progress holds the request: this waits for it */
  h->blocked = hak_os_thread_blocked();
  __atomic_store_n(&h->parked, 0, __ATOMIC_RELAXED);
  r->ops->bind(tier);
  hak_heap_disown(h);
  return tier;
}

void *hak_heap_unpark(hak_heap_registry_t *r, void **tls, void *empty) {
  void *tier = hak_heap_rebind(r, NULL);
  return tier ? tier : (*tls = empty);
}

/* Drains a dead heap from another thread through the tier's drain or flush, holding it
 * BUSY. The loop closes the race with a pusher that saw BUSY: it pushed before our
 * re-check of the list (both sequentially consistent), so we see its slab and go round
 * again. */
static void collect(hak_heap_registry_t *r, hak_heap_t *h, void (*fn)(void *tier)) {
  do {
    if (!hak_heap_transition(&h->state, HAK_HEAP_DEAD, HAK_HEAP_BUSY)) return;
    fn(hak_heap_tier(r, h));
    __atomic_store_n(&h->state, HAK_HEAP_DEAD, __ATOMIC_SEQ_CST);
  } while (__atomic_load_n(&h->pending, __ATOMIC_SEQ_CST) != NULL);
}

void hak_heap_retire(hak_heap_registry_t *r, void *tier) {
  hak_heap_t *h = hak_heap_of(r, tier);
  hak_heap_own(h); /* no reclaim runs while the heap turns DEAD */
  pthread_mutex_lock(&r->lock);
  h->died_ms = hak_now_ms();
  h->next_dead = r->dead;
  __atomic_store_n(&r->dead, h, __ATOMIC_RELAXED); /* flush_dead peeks without the lock */
  __atomic_store_n(&h->state, HAK_HEAP_DEAD, __ATOMIC_SEQ_CST);
  /* The busy mark goes before the lock does: a thread adopting the heap takes the lock
   * first, so it finds busy 0. Dropped after the unlock, the mark raced the adopter's own
   * (both are plain read-modify-writes) and could stay at 1 for good, so the heap was
   * never reclaimed again (ThreadSanitizer found it in threads_api_test). DEAD already
   * keeps reclaims away. */
  hak_heap_leave(&h->busy);
  pthread_mutex_unlock(&r->lock);
  hak_purge_defer_end(); /* hak_heap_disown's other half: may start the purge thread */
  if (__atomic_load_n(&h->pending, __ATOMIC_SEQ_CST)) collect(r, h, r->ops->drain);
  hak_purge_kick(HAK_PURGE_HEAP_BYTES); /* its caches are flushed after the decay */
}

/* Sends the batch of slot e and frees the slot. */
static void slot_send(hak_remote_slot_t *e) {
  hak_slab_t *slab = e->slab;
  hak_heap_registry_t *r = e->r;
  hak_slab_remote_t *line = hak_slab_remote(slab);
  e->slab = NULL;
  hak_remote_buf.used--;
  __atomic_fetch_add(&remote_batches, 1, __ATOMIC_RELAXED);
  if (!hak_remote_push_chain(&line->remote, e->head, e->tail, e->count))
    return; /* already queued */
  hak_heap_t *owner = hak_heap_of(r, __atomic_load_n(&slab->owner, __ATOMIC_ACQUIRE));
  hak_pending_push(&owner->pending, slab, &line->pending_next);
  if (__atomic_load_n(&owner->state, __ATOMIC_SEQ_CST) == HAK_HEAP_DEAD) {
    collect(r, owner, r->ops->drain);
  }
  hak_purge_kick(HAK_PURGE_HEAP_BYTES / 16); /* the owner may never come back for them */
}

void hak_heap_remote_free_slow(hak_heap_registry_t *r, hak_slab_t *slab, void *block, size_t size,
                               hak_remote_slot_t *e) {
  hak_remote_buf_t *b = &hak_remote_buf;
  if (e->slab == slab) { /* the block made the batch full */
    slot_send(e);
    return;
  }
  if (e->slab) slot_send(e);
  if (!b->armed) {
    b->armed = 1;
    pthread_setspecific(remote_key, b);
  }
  /* HAK_REMOTE_BATCH_BYTES over the size rounded up to a power of two: no division */
  uint32_t most =
      (uint32_t)(HAK_REMOTE_BATCH_BYTES >> (size > 1 ? 64 - __builtin_clzll(size - 1) : 0));
  *e = (hak_remote_slot_t){
      slab, block, block, 1, most < HAK_REMOTE_BATCH_BLOCKS ? most : HAK_REMOTE_BATCH_BLOCKS, r};
  b->used++;
  if (e->limit <= 1) slot_send(e);
}

void hak_heap_remote_flush_all(void) {
  hak_remote_buf_t *b = &hak_remote_buf;
  if (!b->used) return;
  __atomic_fetch_add(&remote_flushes, 1, __ATOMIC_RELAXED);
  for (unsigned i = 0; i < HAK_REMOTE_SLOTS && b->used; i++) {
    if (b->slot[i].slab) slot_send(&b->slot[i]);
  }
}

void hak_heap_remote_fork_child(void) {
  /* armed too: the key is set again on the next use */
  memset(&hak_remote_buf, 0, sizeof hak_remote_buf);
}

void hak_heap_remote_counts(uint64_t *batches, uint64_t *flushes) {
  *batches = __atomic_load_n(&remote_batches, __ATOMIC_RELAXED);
  *flushes = __atomic_load_n(&remote_flushes, __ATOMIC_RELAXED);
}

int hak_heap_flush_dead(hak_heap_registry_t *r, uint64_t now_ms, int force) {
  if (!__atomic_load_n(&r->dead, __ATOMIC_RELAXED)) return 0;
  int waiting = 0;
  pthread_mutex_lock(&r->lock);
  for (hak_heap_t *h = r->dead; h; h = h->next_dead) {
    if (h->flushed) continue;
    if (hak_decay_due(h->died_ms, now_ms, force)) {
      collect(r, h, r->ops->flush);
      h->flushed = 1;
    } else {
      waiting = 1;
    }
  }
  pthread_mutex_unlock(&r->lock);
  return waiting;
}

/* Whether heap h is worth a reclaim now: LIVE, and idle for a pass with remote frees
 * waiting or not reclaimed since its last slow path (any LIVE heap, with force). */
static int reclaim_wanted(hak_heap_t *h, int force) {
  if (__atomic_load_n(&h->state, __ATOMIC_ACQUIRE) != HAK_HEAP_LIVE) return 0;
  uint32_t entries = __atomic_load_n(&h->slow_entries, __ATOMIC_RELAXED);
  int idle = entries == h->seen_entries;
  h->seen_entries = entries;
  int due = __atomic_load_n(&h->pending, __ATOMIC_ACQUIRE) || h->reclaimed_entries != entries + 1;
  return force || (idle && due);
}

/* Whether a thread blocked in system call `call` may be parked: not a wait a signal
 * handler makes (sigsuspend, pause), nor a vfork parent, whose child runs on its TLS. */
static int parkable_call(long call) {
  switch (call) {
#ifdef SYS_pause
    case SYS_pause:
#endif
#ifdef SYS_vfork
    case SYS_vfork:
#endif
#ifdef SYS_clone3
    case SYS_clone3:
#endif
    case SYS_rt_sigsuspend:
    case SYS_clone:
      return 0;
    default:
      return call >= 0;
  }
}

/* Whether the thread, as the kernel shows it, is outside hakmem for sure (heap.h). */
static int parkable(const hak_heap_t *h, const hak_os_thread_t *t) {
  return parkable_call(t->call) && (t->blocked & ~h->blocked) == 0;
}

/* Parks heap h, whose thread was seen blocked (see the idle flush in heap.h): its TLS goes
 * to the tier's parked heap, and if the thread is still blocked outside hakmem, the caches are
 * flushed. Reclaim lock held. */
static void park(hak_heap_registry_t *r, hak_heap_t *h, uint64_t idle_since_ms) {
  void *tier = hak_heap_tier(r, h);
  __atomic_store_n(&h->request, 1, __ATOMIC_SEQ_CST);
  /* As for a reclaim: the owner is now seen busy, or it waits for the request in its next
   * slow path. So it cannot turn DEAD (and its thread's TLS go away) before the request
   * goes, whatever the kernel said of it a moment ago. */
  if (hak_os_barrier_all() == 0 && __atomic_load_n(&h->busy, __ATOMIC_SEQ_CST) == 0 &&
      __atomic_load_n(&h->state, __ATOMIC_SEQ_CST) == HAK_HEAP_LIVE &&
      __atomic_load_n(h->tls, __ATOMIC_RELAXED) == tier) {
    __atomic_store_n(&h->parked, 1, __ATOMIC_SEQ_CST);
    __atomic_store_n(h->tls, r->ops->parked, __ATOMIC_SEQ_CST);
    /* From here on, what the thread does it does through the parked heap; if it is
     * blocked now, nothing it began before is still going on. */
    hak_os_thread_t t;
    if (hak_os_thread_state(__atomic_load_n(&h->tid, __ATOMIC_RELAXED), &t) == 0 &&
        parkable(h, &t) && __atomic_load_n(&h->busy, __ATOMIC_SEQ_CST) == 0) {
      r->ops->park(tier, idle_since_ms);
      __atomic_fetch_add(&r->parks, 1, __ATOMIC_RELAXED);
    }
    /* Otherwise the caches stay as they are; the thread binds them again on its next
     * slow path. */
  }
  __atomic_store_n(&h->request, 0, __ATOMIC_RELEASE);
}

/* The watch of live heaps for the idle flush: at most every half decay, from the purge
 * thread, or at every thread blocked now with force (malloc_trim). A heap whose caches
 * and slow paths have not changed for the decay is unused, whether its thread slept or
 * ran (an event loop's timer wakes it ten times a second: redis); if its thread is
 * blocked now (three /proc reads), it is parked. Returns HAK_PURGE_WATCHING while a live
 * heap is not parked. */
static int park_idle(hak_heap_registry_t *r, hak_heap_t *all, int force) {
  if (HAK_TSAN || !r->ops->park || !r->ops->fingerprint || !hak_opt(HAK_OPT_IDLE_FLUSH) ||
      hak_opt(HAK_OPT_FREE_ROUTE_TRACE)) {
    return 0;
  }
  if (!force && !hak_purge_in_thread()) return 0;
  uint64_t now = hak_now_ms();
  if (!force && now < r->watch_due_ms) return HAK_PURGE_WATCHING;
  r->watch_due_ms = now + (uint64_t)hak_opt(HAK_OPT_DECAY_MS) / 2;
  int self = force ? hak_os_thread_id() : 0, watching = 0;
  for (hak_heap_t *h = all; h; h = h->next_all) {
    int tid = __atomic_load_n(&h->tid, __ATOMIC_ACQUIRE);
    if (__atomic_load_n(&h->state, __ATOMIC_ACQUIRE) != HAK_HEAP_LIVE ||
        __atomic_load_n(&h->parked, __ATOMIC_ACQUIRE) || tid == self || tid <= 0 || !h->tls) {
      continue;
    }
    watching = HAK_PURGE_WATCHING;
    uint64_t use = r->ops->fingerprint(hak_heap_tier(r, h)) ^
                   __atomic_load_n(&h->slow_entries, __ATOMIC_RELAXED);
    if (use != h->seen_use) { /* used since the last look */
      h->seen_use = use;
      h->idle_since_ms = now;
      if (!force) continue;
    }
    hak_os_thread_t t;
    if (hak_decay_due(h->idle_since_ms, now, force) && hak_os_thread_state(tid, &t) == 0 &&
        parkable(h, &t)) {
      park(r, h, force ? now : h->idle_since_ms);
    }
  }
  return watching;
}

int hak_heap_reclaim_idle(hak_heap_registry_t *r, int force) {
  if (force) {
    pthread_mutex_lock(&r->reclaim_lock);
  } else if (pthread_mutex_trylock(&r->reclaim_lock) != 0) {
    return 1; /* another pass is at it; ask to be run again */
  }
  hak_heap_t *all = __atomic_load_n(&r->all, __ATOMIC_ACQUIRE);
  int asked = 0;
  for (hak_heap_t *h = all; h; h = h->next_all) {
    if (!reclaim_wanted(h, force)) continue;
    __atomic_store_n(&h->request, 1, __ATOMIC_RELAXED);
    asked++;
  }
  /* Every owner's busy mark is visible now, or it will see its request (heap.h). */
  int barrier = asked ? hak_os_barrier_all() : 0;
  int waiting = 0;
  for (hak_heap_t *h = all; h; h = h->next_all) {
    if (!__atomic_load_n(&h->request, __ATOMIC_RELAXED)) {
      waiting |= __atomic_load_n(&h->state, __ATOMIC_RELAXED) == HAK_HEAP_LIVE &&
                 __atomic_load_n(&h->pending, __ATOMIC_RELAXED) != NULL;
      continue;
    }
    /* The owner is outside its slow paths and stays out while the request stands; it
     * turns DEAD only inside one, so LIVE still holds. */
    if (barrier == 0 && __atomic_load_n(&h->busy, __ATOMIC_ACQUIRE) == 0 &&
        __atomic_load_n(&h->state, __ATOMIC_ACQUIRE) == HAK_HEAP_LIVE) {
      r->ops->reclaim(hak_heap_tier(r, h));
      h->reclaimed_entries = __atomic_load_n(&h->slow_entries, __ATOMIC_RELAXED) + 1;
    }
    __atomic_store_n(&h->request, 0, __ATOMIC_RELEASE);
    waiting |= __atomic_load_n(&h->pending, __ATOMIC_RELAXED) != NULL;
  }
  waiting |= park_idle(r, all, force);
  pthread_mutex_unlock(&r->reclaim_lock);
  return waiting;
}

void *hak_heap_fork_unpark(hak_heap_registry_t *r) {
  void *tier = pthread_getspecific(r->key);
  if (!tier) return NULL;
  hak_heap_t *h = hak_heap_of(r, tier);
  if (!h->parked || !hak_heap_intact_in_child(h)) return NULL;
  h->parked = 0;
  r->ops->bind(tier);
  return tier;
}

/* Dead heaps were left consistent by their threads and stay adoptable: the dead list is
 * rebuilt from them (the parent's may have been mid-change). Every other heap (live, or
 * being collected) may be half-changed and becomes an orphan. */
void hak_heap_fork_child(hak_heap_registry_t *r, void *self) {
  hak_fork_child_reset_lock(&r->lock);
  hak_fork_child_reset_lock(&r->reclaim_lock);
  hak_heap_t *mine = self ? hak_heap_of(r, self) : NULL;
  if (mine && mine->tid) mine->tid = hak_os_thread_id();
  __atomic_store_n(&r->dead, NULL, __ATOMIC_RELAXED);
  for (hak_heap_t *h = r->all; h; h = h->next_all) {
    h->request = 0; /* the reclaimer that asked does not exist here */
    if (h == mine) continue;
    if (h->state == HAK_HEAP_DEAD) {
      h->next_dead = r->dead;
      __atomic_store_n(&r->dead, h, __ATOMIC_RELAXED);
    } else {
      h->state = HAK_HEAP_ORPHAN;
    }
  }
}
