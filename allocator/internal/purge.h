/* The purge thread: runs the decay passes of every tier on time, also when the program
 * makes no allocator call at all (the tiers' own slow paths only pass by now and then).
 *
 * It is started lazily, once the kicks a tier makes when memory becomes free and starts
 * its decay (an emptied SuperSlab or span, a cached Large block, a dead heap, a slab
 * queued with remote frees) add up to HAK_PURGE_START_BYTES: a program that never frees
 * much never gets the thread. While some free memory
 * still waits for its decay, the thread runs a pass every hak_decay_step_ms; when none
 * does, it sleeps until the next kick. It blocks every signal, allocates nothing, and is
 * started again in a fork child on its first kick there. HAKMEM_PURGE_THREAD=0 turns it
 * off: the passes then run only from allocator calls (Large calls, malloc_trim). */
#ifndef HAK_ALLOCATOR_INTERNAL_PURGE_H
#define HAK_ALLOCATOR_INTERNAL_PURGE_H

#include <stdint.h>

#include "allocator/internal/config.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The pass the thread runs: returns HAK_PURGE_WAITING while free memory still waits for
 * its decay (the next pass comes a step later), HAK_PURGE_WATCHING while live threads'
 * heaps are watched for the idle flush (heap/heap.h; with nothing waiting, the next pass
 * comes half a decay later), or both. Set once, before the first kick. */
#define HAK_PURGE_WAITING 1
#define HAK_PURGE_WATCHING 2
void hak_purge_set_pass(int (*pass)(void));

/* Whether the calling thread is the purge thread. */
int hak_purge_in_thread(void);

#define HAK_PURGE_START_BYTES ((uint64_t)4 << 20)

/* Relief: a tier about to make `bytes` of fresh memory resident (Tiny committing a
 * SuperSlab) first asks the others to give back as much of their idle free memory (Pool's
 * empty spans), so that memory moving from one tier to another does not count twice in
 * the peak while the first tier's copy waits for its decay. The function is set once at
 * initialisation (the front knows the tiers; the tiers do not know each other); it may
 * take the other tiers' locks, never the caller's. */
void hak_purge_set_relief(void (*relief)(uint64_t bytes));
void hak_purge_relieve(uint64_t bytes);

/* `bytes` of free memory started their decay. Cheap once the thread runs (two loads);
 * must be called with no allocator lock held, since a call may create the thread. */
extern HAK_HIDDEN int hak_purge_kicked; /* set by a kick, cleared by the thread at each pass */
void hak_purge_kick_slow(uint64_t bytes);
HAK_INLINE void hak_purge_kick(uint64_t bytes) {
  /* The common case once the thread runs: it has been kicked and not looked yet. */
  if (HAK_LIKELY(__atomic_load_n(&hak_purge_kicked, __ATOMIC_RELAXED))) return;
  hak_purge_kick_slow(bytes);
}

/* Around code that holds what a new thread's first malloc may need (the registry lock,
 * another heap's claim, a Pool shard): a kick inside only notes that the thread is
 * wanted, and the outermost end starts it. Thread-local, nestable. */
extern HAK_HIDDEN HAK_TLS int hak_purge_defer_depth; /* this thread's nesting of such regions */
extern HAK_HIDDEN int hak_purge_start_wanted;        /* a kick inside one reached the start */
void hak_purge_start_deferred(void);

/* Inline: every slow path of a thread heap passes through both. */
HAK_INLINE void hak_purge_defer_begin(void) { hak_purge_defer_depth++; }

HAK_INLINE void hak_purge_defer_end(void) {
  if (--hak_purge_defer_depth == 0 &&
      HAK_UNLIKELY(__atomic_load_n(&hak_purge_start_wanted, __ATOMIC_RELAXED))) {
    hak_purge_start_deferred();
  }
}

/* Fork child: the thread does not exist there; the next kick starts a new one. */
void hak_purge_fork_child(void);

/* For tests and statistics: passes run by the thread so far, and whether it runs. */
uint64_t hak_purge_passes(void);
int hak_purge_running(void);

#ifdef __cplusplus
}
#endif

#endif /* HAK_ALLOCATOR_INTERNAL_PURGE_H */
