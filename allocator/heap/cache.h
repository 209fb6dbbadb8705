/* A thread's cache of one size class, the same for Tiny and Pool: a singly linked list
 * through the blocks' first word, 16 bytes so the fast paths index an array of them with
 * one shift. It holds cap - room blocks; counting the room down lets a push test for
 * overflow with the flags of its own decrement. Owner thread only. */
#ifndef HAK_ALLOCATOR_HEAP_CACHE_H
#define HAK_ALLOCATOR_HEAP_CACHE_H

#include <stdint.h>

#include "allocator/internal/config.h"

typedef struct {
  void *head;   /* the list */
  int32_t room; /* blocks that still fit; negative once it holds more than cap */
  uint32_t cap; /* capacity in blocks (the tier adapts it) */
} hak_cache_t;

HAK_STATIC_ASSERT(sizeof(hak_cache_t) == 16, "a cache is 16 bytes: indexed with a shift");

/* The first block, or NULL when the cache is empty. */
HAK_INLINE void *hak_cache_pop(hak_cache_t *c) {
  void *p = c->head;
  if (HAK_LIKELY(p != NULL)) {
    c->head = *(void **)p;
    c->room++;
  }
  return p;
}

/* Pushes block p; returns nonzero when the cache now holds more than its capacity (the
 * caller trims it). */
HAK_INLINE int hak_cache_push(hak_cache_t *c, void *p) {
  *(void **)p = c->head;
  c->head = p;
  return --c->room < 0;
}

/* Changes the capacity; the room moves with it (it may go negative: the next push
 * reports the overflow). */
HAK_INLINE void hak_cache_set_cap(hak_cache_t *c, uint32_t cap) {
  c->room += (int32_t)cap - (int32_t)c->cap;
  c->cap = cap;
}

#endif /* HAK_ALLOCATOR_HEAP_CACHE_H */
