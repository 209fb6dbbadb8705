/* Shared by the front end's files (not by other layers): initialisation state, the decay
 * passes, and whether Pool is in use. */
#ifndef HAK_ALLOCATOR_FRONT_INIT_H
#define HAK_ALLOCATOR_FRONT_INIT_H

#include "allocator/front/front.h"

extern HAK_HIDDEN int hak_front_init_state; /* 0 none, 1 running, 2 done */
extern HAK_HIDDEN int hak_front_stats_fd;   /* where HAKMEM_STATS=1 prints at exit */

/* Initialises once, from whichever thread comes first; a call from inside initialisation
 * returns at once (the caller then falls back to Large). */
void hak_front_init(void);

HAK_INLINE void hak_front_ensure_init(void) {
  if (HAK_UNLIKELY(__atomic_load_n(&hak_front_init_state, __ATOMIC_ACQUIRE) != 2)) {
    hak_front_init();
  }
}

/* Pool has a region (it exists only beside Tiny). */
HAK_INLINE int hak_front_pool_ready(void) { return hak_front.pool_size != 0; }

/* Runs every tier's decay pass when one is due (always with `force`): from the purge
 * thread, Large calls and malloc_trim. Returns 1 while free memory still waits for its
 * decay (the answer of the last pass when none was due). */
int hak_front_maintain(int force);

#endif /* HAK_ALLOCATOR_FRONT_INIT_H */
