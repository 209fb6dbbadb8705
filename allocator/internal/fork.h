/* What a fork child needs to repair the allocator state it inherited. hakmem takes no
 * lock before fork (a prepare handler that holds allocator locks while glibc's fork then
 * waits for stdio's list lock deadlocks against a thread in getline), so in the child a
 * lock may be held by a thread that no longer exists, and the data it guards may be
 * half-changed. Each tier asks, lock by lock, whether that was so, and then discards
 * (leaks) what it cannot trust instead of reusing it. */
#ifndef HAK_ALLOCATOR_INTERNAL_FORK_H
#define HAK_ALLOCATOR_INTERNAL_FORK_H

#include <pthread.h>

#include "allocator/internal/config.h"

/* Fork child only: returns 1 when `m` was held at the instant of the fork (by any thread,
 * the forking one included, as when fork() runs in a signal handler that interrupted the
 * allocator), 0 when it was free; either way leaves `m` initialised and unlocked. */
HAK_INLINE int hak_fork_child_reset_lock(pthread_mutex_t *m) {
  if (pthread_mutex_trylock(m) == 0) {
    pthread_mutex_unlock(m);
    return 0;
  }
  /* Held by a thread the child does not have: made anew (re-initialising a mutex this
   * thread held left ThreadSanitizer believing it still held it). */
  pthread_mutex_init(m, NULL);
  return 1;
}

/* A thread marks its heap busy around every slow-path change of it, so that a fork from
 * a signal handler that interrupted such a change leaves a child that knows its own heap
 * is not to be trusted. For that a signal fence suffices; the stores are atomic (plain
 * moves) because the heap engine's reclaimer reads the mark from another thread, after a
 * membarrier (heap/heap.h), and the leave is a release for it. */
HAK_INLINE void hak_heap_enter(int *busy) {
  __atomic_store_n(busy, *busy + 1, __ATOMIC_RELAXED);
  __atomic_signal_fence(__ATOMIC_SEQ_CST);
}

HAK_INLINE void hak_heap_leave(int *busy) {
  __atomic_signal_fence(__ATOMIC_SEQ_CST);
  __atomic_store_n(busy, *busy - 1, __ATOMIC_RELEASE);
}

#endif /* HAK_ALLOCATOR_INTERNAL_FORK_H */
