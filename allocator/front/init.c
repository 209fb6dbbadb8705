/* The front end's start and fork: lazy, recursion-safe initialisation (options, the
 * claimed range for Tiny and Pool), the fork child's repair, and the work done at load
 * and at exit. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>

#include "allocator/front/init.h"
#include "allocator/hakmem.h"
#include "allocator/internal/link.h"
#include "allocator/internal/log.h"
#include "allocator/internal/options.h"
#include "allocator/internal/purge.h"
#include "allocator/large/large.h"
#include "allocator/os_boundary/os.h"

#define MIN_RESERVE ((size_t)256 << 20) /* two grid rows for Tiny, and as much for Pool */

hak_front_t hak_front;
int hak_front_init_state;   /* 0 none, 1 running, 2 done */
int hak_front_stats_fd = 2; /* HAKMEM_STATS output: a copy of the stderr the process began with */

static HAK_TLS int in_init;

static const char *env_get(const char *name) { return getenv(name); }

/* fork takes no lock in the parent (internal/fork.h says why); the child repairs what
 * it inherited, tier by tier. */
static void fork_child(void) {
  hak_purge_fork_child();
  hak_os_fork_child();
  hak_large_fork_child();
  hak_pool_fork_child();
  hak_tiny_fork_child();
  hak_heap_remote_fork_child();
}

/* Where Large's region starts in a claim of `size` for Tiny and Pool: after Pool's page
 * registry, on a 2 MiB boundary. */
static size_t large_offset(size_t size) {
  size_t end = size + hak_pool_registry_bytes(size / 2);
  return (end + ((size_t)2 << 20) - 1) & ~(((size_t)2 << 20) - 1);
}

/* The range Tiny and Pool live in: the largest power of two not above HAKMEM_RESERVE_GB,
 * with Pool's page registry after it, then Large's region, half as big. It is claimed, not reserved
 * (os.h): only what is used gets mapped, so an address-space limit, set before the start or lowered
 * later, is left to the program (a 64 GiB reservation used to count against it whole). Halved when
 * no free range is found; returns 0 when none is (Large then serves everything). */
static size_t claim_range(void **base) {
  size_t size = (size_t)1 << 30;
  while (size * 2 <= ((size_t)hak_opt(HAK_OPT_RESERVE_GB) << 30)) size *= 2;
  for (; size >= MIN_RESERVE; size /= 2) {
    if (hak_os_claim(large_offset(size) + size / 2, HAK_TINY_SS_SIZE, base) == 0) return size;
  }
  return 0;
}

/* The tier and class of a block, for the messages of corrupted links and double frees. */
static const char *block_where(const void *p, char *buf, size_t cap) {
  uintptr_t off = (uintptr_t)p - hak_tiny_geom.base;
  if (hak_in_tiny(off)) return hak_class_where(buf, cap, "tiny", hak_tiny_class_at(off));
  int cls = hak_in_pool(off) ? hak_pool_registry_class(off - hak_tiny_geom.size) : -1;
  return cls >= 0 ? hak_class_where(buf, cap, "pool", (unsigned)cls) : NULL;
}

/* Free-list links (internal/link.h): a Tiny cache's blocks share their grid column and
 * 16-byte alignment, a Pool list's their 256-byte alignment (every Pool class size is a
 * multiple of 256 and spans start on 64 KiB boundaries). */
static void links_init(void) {
  uintptr_t tiny_mask =
      HAK_LINK_HIGH_BITS | ((uintptr_t)(HAK_TINY_CLASS_SLOTS - 1) << HAK_TINY_SS_SHIFT) | 15;
  uintptr_t pool_mask = HAK_LINK_HIGH_BITS | 255;
  hak_links_init(hak_os_random(), HAK_HARDENING && hak_opt(HAK_OPT_HARDEN), tiny_mask, pool_mask);
  hak_links_set_where(block_where);
}

/* The purge thread's pass: every tier's decay, a step after the previous one. */
static int purge_pass(void) { return hak_front_maintain(0); }

void hak_front_init(void) {
  int expected = 0;
  if (in_init) return; /* recursion from inside init: the caller falls back to Large */
  if (!__atomic_compare_exchange_n(&hak_front_init_state, &expected, 1, 0, __ATOMIC_ACQ_REL,
                                   __ATOMIC_ACQUIRE)) {
    while (__atomic_load_n(&hak_front_init_state, __ATOMIC_ACQUIRE) != 2) sched_yield();
    return;
  }
  in_init = 1;
  hak_options_load(env_get, 2);
  links_init();
  for (int k = 0; k < HAK_OS_KIND_COUNT; k++) {
    hak_os_fail_rate((hak_os_kind_t)k, (uint32_t)hak_opt(HAK_OPT_FAULT_RATE));
  }
  void *base = NULL;
  size_t size = claim_range(&base);
  if (size) {
    uintptr_t b = (uintptr_t)base;
    hak_front.base = b;
    /* Pool's offsets are taken from the half, so Tiny must use exactly that half;
     * hak_tiny_init refuses any other geometry and then leaves its region empty. */
    if (hak_tiny_init(b, size / 2) == 0) {
      hak_front.total = hak_pool_init(b + size / 2, size / 2) == 0 ? size : size / 2;
      hak_front.pool_size = hak_front.total - size / 2;
    }
    hak_large_init(b + large_offset(size), size / 2);
  }
  pthread_atfork(NULL, NULL, fork_child);
  hak_purge_set_pass(purge_pass);
  if (hak_front.pool_size) hak_purge_set_relief(hak_pool_give_back);
  __atomic_store_n(&hak_front.ready, hak_tiny_geom.size != 0, __ATOMIC_RELEASE);
  __atomic_store_n(&hak_front_init_state, 2, __ATOMIC_RELEASE);
  in_init = 0;
  if (hak_opt(HAK_OPT_HELP)) hak_options_print(2);
  /* Programs such as coreutils close stderr before exit; the statistics still get out. */
  if (hak_opt(HAK_OPT_STATS)) {
    int fd = fcntl(2, F_DUPFD_CLOEXEC, 64);
    if (fd >= 0) hak_front_stats_fd = fd;
  }
}

/* Initialise at load as well, so HAKMEM_HELP and option warnings appear even in programs
 * that never allocate; the first malloc may still come earlier, from the loader. */
__attribute__((constructor)) static void front_load(void) {
  if (__atomic_load_n(&hak_front_init_state, __ATOMIC_ACQUIRE) != 2) hak_front_init();
}

__attribute__((destructor)) static void front_exit(void) {
  if (__atomic_load_n(&hak_front_init_state, __ATOMIC_ACQUIRE) == 2 && hak_opt(HAK_OPT_STATS)) {
    hak_stats_print(hak_front_stats_fd);
  }
}
