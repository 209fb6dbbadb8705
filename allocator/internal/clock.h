/* The one clock and the one decay rule of every tier. Memory idle since `since` (an
 * empty SuperSlab or span, a cached Large mapping, a dead heap's caches) is due to go back
 * to the OS once HAKMEM_DECAY_MS have passed, or at once in a forced pass (malloc_trim).
 * The front runs the tiers' passes at most eight times per decay period. */
#ifndef HAK_ALLOCATOR_INTERNAL_CLOCK_H
#define HAK_ALLOCATOR_INTERNAL_CLOCK_H

#include <stdint.h>
#include <time.h>

#include "allocator/internal/config.h"
#include "allocator/internal/options.h"

/* Milliseconds on CLOCK_MONOTONIC_COARSE: a vDSO read of the last tick, no system call
 * and no time-stamp counter, a few milliseconds coarse — plenty for a decay counted in
 * hundreds of them, and read on every Large call and slow path. */
HAK_INLINE uint64_t hak_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Whether memory idle since `since_ms` is due at `now_ms` (always, with `force`). A pass
 * reads its clock once, so memory freed during the pass is dated after `now_ms`: it is not
 * due (the difference wrapped round and such memory went back at once). */
HAK_INLINE int hak_decay_due(uint64_t since_ms, uint64_t now_ms, int force) {
  return force || (now_ms >= since_ms && now_ms - since_ms >= (uint64_t)hak_opt(HAK_OPT_DECAY_MS));
}

/* The interval between two decay passes: an eighth of the decay period, at least 1 ms. */
HAK_INLINE uint64_t hak_decay_step_ms(void) {
  uint64_t step = (uint64_t)hak_opt(HAK_OPT_DECAY_MS) / 8;
  return step ? step : 1;
}

#endif /* HAK_ALLOCATOR_INTERNAL_CLOCK_H */
