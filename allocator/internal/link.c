/* The key and checks of encoded free-list links (link.h). */
#include "allocator/internal/link.h"

#include "allocator/internal/log.h"

uintptr_t hak_link_key __attribute__((aligned(64))); /* the four share a cache line */
uintptr_t hak_link_tiny_mask;
uintptr_t hak_link_pool_mask;
int hak_link_on;

static hak_link_where_fn link_where;

void hak_links_init(uintptr_t secret, int harden, uintptr_t tiny_mask, uintptr_t pool_mask) {
  if (!harden) secret = tiny_mask = pool_mask = 0;
  /* A key of 0 would store plain pointers; any other value is as good as the next. */
  else if (secret == 0)
    secret = 0x9e3779b97f4a7c15u;
  hak_link_key = secret;
  hak_link_tiny_mask = tiny_mask;
  hak_link_pool_mask = pool_mask;
  hak_link_on = harden != 0;
}

void hak_links_set_where(hak_link_where_fn where) { link_where = where; }

static const char *where_of(const void *block, char *buf, size_t cap) {
  return link_where ? link_where(block, buf, cap) : NULL;
}

void hak_link_corrupt(const char *what, const void *block) {
  char where[32];
  hak_fatal(what, block, where_of(block, where, sizeof where));
}

void hak_link_double_free(const void *block) {
  if (!hak_link_on && !HAK_CHECKS) return;
  char where[32];
  hak_fatal("double free of", block, where_of(block, where, sizeof where));
}
