/* Atomic bitmaps: the debug builds' record of which blocks are allocated. Both tiers keep
 * one per slab; a free by another thread and the owner's allocation may touch one word
 * at once, so every change is an atomic read-modify-write. */
#ifndef HAK_ALLOCATOR_INTERNAL_BITS_H
#define HAK_ALLOCATOR_INTERNAL_BITS_H

#include <stdint.h>

#include "allocator/internal/config.h"

/* Sets bit i of `words`; returns whether it was set before. */
HAK_INLINE int hak_bit_set(uint64_t *words, uint32_t i) {
  uint64_t bit = (uint64_t)1 << (i & 63);
  return (__atomic_fetch_or(&words[i >> 6], bit, __ATOMIC_RELAXED) & bit) != 0;
}

/* Clears bit i of `words`; returns whether it was set before. */
HAK_INLINE int hak_bit_clear(uint64_t *words, uint32_t i) {
  uint64_t bit = (uint64_t)1 << (i & 63);
  return (__atomic_fetch_and(&words[i >> 6], ~bit, __ATOMIC_RELAXED) & bit) != 0;
}

#endif /* HAK_ALLOCATOR_INTERNAL_BITS_H */
