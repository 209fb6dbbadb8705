/* The intrusive doubly linked list both tiers keep slabs and spans in: through the
 * avail_prev / avail_next fields of the node type, so one definition serves a Tiny slab
 * and a Pool span alike. `head` is a pointer to the list's head pointer. */
#ifndef HAK_ALLOCATOR_INTERNAL_LIST_H
#define HAK_ALLOCATOR_INTERNAL_LIST_H

#include <stddef.h>

#define HAK_LIST_PUSH(head, node)                \
  do {                                           \
    (node)->avail_prev = NULL;                   \
    (node)->avail_next = *(head);                \
    if (*(head)) (*(head))->avail_prev = (node); \
    *(head) = (node);                            \
  } while (0)

#define HAK_LIST_REMOVE(head, node)                                              \
  do {                                                                           \
    if ((node)->avail_prev)                                                      \
      (node)->avail_prev->avail_next = (node)->avail_next;                       \
    else                                                                         \
      *(head) = (node)->avail_next;                                              \
    if ((node)->avail_next) (node)->avail_next->avail_prev = (node)->avail_prev; \
  } while (0)

#endif /* HAK_ALLOCATOR_INTERNAL_LIST_H */
