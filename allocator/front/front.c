/* The front end's slow paths: lazy recursion-safe initialisation and the reservation,
 * tier dispatch for every function of the malloc family, fork handlers, statistics. */
#define _GNU_SOURCE
#include "allocator/front/front.h"

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "allocator/hakmem.h"
#include "allocator/internal/log.h"
#include "allocator/internal/options.h"
#include "allocator/internal/trace.h"
#include "allocator/large/large.h"
#include "allocator/os_boundary/os.h"

#define MIN_RESERVE ((size_t)256 << 20) /* two grid rows for Tiny, and as much for Pool */

hak_front_t hak_front;

static int init_state; /* 0 none, 1 running, 2 done */
static HAK_TLS int in_init;
static uint64_t front_foreign_frees;
static int stats_fd = 2; /* HAKMEM_STATS output: a copy of the stderr the process began with */

static const char *env_get(const char *name) { return getenv(name); }

/* fork takes no lock in the parent (internal/fork.h says why); the child repairs what
 * it inherited, tier by tier. */
static void fork_child(void) {
  hak_os_fork_child();
  hak_large_fork_child();
  hak_pool_fork_child();
  hak_tiny_fork_child();
}

/* The range Tiny and Pool live in: the largest power of two not above HAKMEM_RESERVE_GB,
 * with Pool's page registry after it. It is claimed, not reserved (os.h): only what is
 * used gets mapped, so an address-space limit, set before the start or lowered later,
 * is left to the program (a 64 GiB reservation used to count against it whole). Halved
 * when no free range is found; returns 0 when none is (Large then serves everything). */
static size_t claim_range(void **base) {
  size_t size = (size_t)1 << 30;
  while (size * 2 <= ((size_t)hak_opt(HAK_OPT_RESERVE_GB) << 30)) size *= 2;
  for (; size >= MIN_RESERVE; size /= 2) {
    size_t registry = hak_pool_registry_bytes(size / 2);
    if (hak_os_claim(size + registry, HAK_TINY_SS_SIZE, base) == 0) return size;
  }
  return 0;
}

static void front_init(void) {
  int expected = 0;
  if (in_init) return; /* recursion from inside init: the caller falls back to Large */
  if (!__atomic_compare_exchange_n(&init_state, &expected, 1, 0, __ATOMIC_ACQ_REL,
                                   __ATOMIC_ACQUIRE)) {
    while (__atomic_load_n(&init_state, __ATOMIC_ACQUIRE) != 2) sched_yield();
    return;
  }
  in_init = 1;
  hak_options_load(env_get, 2);
  void *base = NULL;
  size_t size = claim_range(&base);
  if (size) {
    uintptr_t b = (uintptr_t)base;
    hak_front.base = b;
    /* Pool's offsets are taken from the half, so Tiny must use exactly that half;
     * hak_tiny_init refuses any other geometry and then leaves its region empty. */
    if (hak_tiny_init(b, size / 2) == 0) {
      hak_front.total = hak_pool_init(b + size / 2, size / 2) == 0 ? size : size / 2;
    }
  }
  pthread_atfork(NULL, NULL, fork_child);
  __atomic_store_n(&hak_front.ready, hak_tiny_geom.size != 0, __ATOMIC_RELEASE);
  __atomic_store_n(&init_state, 2, __ATOMIC_RELEASE);
  in_init = 0;
  if (hak_opt(HAK_OPT_HELP)) hak_options_print(2);
  /* Programs such as coreutils close stderr before exit; the statistics still get out. */
  if (hak_opt(HAK_OPT_STATS)) {
    int fd = fcntl(2, F_DUPFD_CLOEXEC, 64);
    if (fd >= 0) stats_fd = fd;
  }
}

static int pool_ready(void) { return hak_front.total > hak_tiny_geom.size; }

static uint64_t maintain_due_ms;

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Decay work of every tier, run from Large calls and malloc_trim; at most a few times per
 * decay period unless forced, so a Large malloc+free pair stays cheap. */
static void maintain(int force) {
  uint64_t now = now_ms();
  uint64_t due = __atomic_load_n(&maintain_due_ms, __ATOMIC_RELAXED);
  if (!force && now < due) return;
  uint64_t step = (uint64_t)hak_opt(HAK_OPT_DECAY_MS) / 8;
  __atomic_store_n(&maintain_due_ms, now + (step ? step : 1), __ATOMIC_RELAXED);
  if (hak_front.ready) hak_tiny_maintain(force);
  if (pool_ready()) hak_pool_maintain(force);
  hak_large_maintain(force);
}

static void *large_malloc(size_t n, size_t align, int zero) {
  void *p = hak_large_malloc(n, align, zero);
  maintain(0);
  return p;
}

void *hak_front_malloc_slow(size_t n) {
  if (HAK_UNLIKELY(__atomic_load_n(&init_state, __ATOMIC_ACQUIRE) != 2)) front_init();
  void *p = NULL;
  if (n <= HAK_TINY_MAX && hak_front.ready) {
    p = hak_tiny_malloc(n);
  } else if (n <= HAK_POOL_MAX && pool_ready()) {
    p = hak_pool_malloc(n);
  }
  /* Large also catches what a full Tiny or Pool region cannot serve. */
  return p ? p : large_malloc(n, 16, 0);
}

static void foreign_free(void *p) {
  if (HAK_CHECKS) hak_fatal("free of a pointer hakmem does not own", p, NULL);
  __atomic_fetch_add(&front_foreign_frees, 1, __ATOMIC_RELAXED);
  HAK_TRACE_ROUTE(HAK_ROUTE_FOREIGN, p, 1);
}

void hak_front_free_slow(void *p) {
  if (p == NULL) return;
  uintptr_t off = (uintptr_t)p - hak_front.base;
  if (off < hak_front.total) {
    hak_pool_free(p, off - hak_tiny_geom.size);
    return;
  }
  if (!hak_large_free(p)) {
    foreign_free(p);
    return;
  }
  maintain(0);
}

size_t hak_front_usable(const void *p) {
  if (p == NULL) return 0;
  uintptr_t off = (uintptr_t)p - hak_front.base;
  if (off < hak_tiny_geom.size) return hak_tiny_owns(off) ? hak_tiny_usable(off) : 0;
  if (off < hak_front.total) return hak_pool_usable(off - hak_tiny_geom.size);
  return hak_large_usable(p);
}

void *hak_front_calloc(size_t count, size_t size) {
  size_t n;
  if (__builtin_mul_overflow(count, size, &n)) {
    errno = ENOMEM;
    return NULL;
  }
  if (n > HAK_POOL_MAX) {
    if (HAK_UNLIKELY(__atomic_load_n(&init_state, __ATOMIC_ACQUIRE) != 2)) front_init();
    return large_malloc(n, 16, 1); /* fresh mappings are zero: no pages touched */
  }
  void *p = hak_front_malloc(n);
  if (p) memset(p, 0, n);
  return p;
}

void *hak_front_reallocarray(void *p, size_t count, size_t size) {
  size_t n;
  if (__builtin_mul_overflow(count, size, &n)) {
    errno = ENOMEM;
    return NULL;
  }
  return hak_front_realloc(p, n);
}

void *hak_front_realloc(void *p, size_t n) {
  if (p == NULL) return hak_front_malloc(n);
  if (n == 0) { /* glibc: frees and returns NULL */
    hak_front_free(p);
    return NULL;
  }
  size_t usable = hak_front_usable(p);
  if (usable == 0) {
    if (HAK_CHECKS) hak_fatal("realloc of a pointer hakmem does not own", p, NULL);
    __atomic_fetch_add(&front_foreign_frees, 1, __ATOMIC_RELAXED);
    errno = EINVAL;
    return NULL;
  }
  uintptr_t off = (uintptr_t)p - hak_front.base;
  if (off >= hak_front.total && n > HAK_POOL_MAX) {
    void *q = hak_large_realloc(p, n);
    if (q) return q;
  } else if (n <= usable && n > usable / 2) {
    return p; /* fits, and not so much smaller that a smaller class would be worth it */
  }
  void *q = hak_front_malloc(n);
  if (!q) return NULL; /* errno is ENOMEM and p is untouched */
  memcpy(q, p, n < usable ? n : usable);
  hak_front_free(p);
  return q;
}

/* A Pool block of at least n bytes aligned to `align` (<= HAK_POOL_PAGE_SIZE): spans start
 * on 64 KiB boundaries, so every block of a class whose size is a multiple of `align` is
 * aligned to it (the powers of two up to 64 KiB are classes). A page-aligned 16-byte
 * block thus costs a 4 KiB block, not a mapping of its own. */
static void *pool_aligned(size_t align, size_t n) {
  size_t want = n > align ? n : align;
  if (want <= HAK_POOL_MIN) want = HAK_POOL_MIN + 1;
  for (unsigned cls = hak_pool_class_of(want); cls < HAK_POOL_CLASSES; cls++) {
    if (hak_pool_class_size[cls] % align == 0) return hak_pool_malloc(hak_pool_class_size[cls]);
  }
  return NULL;
}

/* Tiny blocks of a class whose size is a multiple of `align` (<= 128) are aligned to it:
 * slabs are 64 KiB aligned and blocks start 128 bytes in. Pool serves alignments up to
 * 64 KiB (pool_aligned); Large the rest. A zero-size request gets a block like any other. */
void *hak_front_aligned(size_t align, size_t n, int zero) {
  if (align <= 16) return zero ? hak_front_calloc(1, n) : hak_front_malloc(n);
  if (HAK_UNLIKELY(__atomic_load_n(&init_state, __ATOMIC_ACQUIRE) != 2)) front_init();
  void *p = NULL;
  if (align <= 128 && n <= HAK_TINY_MAX && hak_front.ready) {
    unsigned cls = hak_tiny_class_of(n > align ? n : align);
    while (hak_tiny_class_size[cls] % align) cls++;
    p = hak_tiny_malloc(hak_tiny_class_size[cls]);
  } else if (align <= HAK_POOL_PAGE_SIZE && n <= HAK_POOL_MAX && pool_ready()) {
    p = pool_aligned(align, n);
  }
  if (!p) return large_malloc(n, align, zero);
  if (zero) memset(p, 0, n);
  return p;
}

static int power_of_two(size_t a) { return a != 0 && (a & (a - 1)) == 0; }

/* Returns the error code and, on failure, also leaves it in errno, as glibc does (programs
 * check either). A success leaves errno as it was. */
int hak_front_posix_memalign(void **out, size_t align, size_t n) {
  if (!power_of_two(align) || align < sizeof(void *)) return EINVAL;
  int saved = errno;
  void *p = hak_front_aligned(align, n, 0);
  if (!p) {
    errno = ENOMEM;
    return ENOMEM;
  }
  errno = saved;
  *out = p;
  return 0;
}

void *hak_front_aligned_alloc(size_t align, size_t n) {
  if (!power_of_two(align)) {
    errno = EINVAL;
    return NULL;
  }
  return hak_front_aligned(align, n, 0);
}

/* glibc: an alignment above SIZE_MAX / 2 + 1 is EINVAL (no power of two is); up to it, a
 * request that cannot be served is ENOMEM. */
void *hak_front_memalign(size_t align, size_t n) {
  if (align > SIZE_MAX / 2 + 1) {
    errno = EINVAL;
    return NULL;
  }
  size_t a = 1; /* glibc rounds a bad alignment up to the next power of two */
  while (a < align) a <<= 1;
  return hak_front_aligned(a, n, 0);
}

void *hak_front_valloc(size_t n) { return hak_front_aligned(hak_os_page_size(), n, 0); }

void *hak_front_pvalloc(size_t n) {
  size_t page = hak_os_page_size();
  if (n > SIZE_MAX - page) {
    errno = ENOMEM;
    return NULL;
  }
  return hak_front_aligned(page, n ? (n + page - 1) & ~(page - 1) : page, 0);
}

void hak_front_free_sized(void *p, size_t n, size_t align) {
  if (HAK_CHECKS && p) {
    size_t usable = hak_front_usable(p);
    HAK_CHECK(usable == 0 || n <= usable, "free_sized with a size larger than the block at", p,
              NULL);
    HAK_CHECK(align == 0 || ((uintptr_t)p & (align - 1)) == 0,
              "free_aligned_sized with an alignment the block does not have at", p, NULL);
  }
  hak_front_free(p);
}

int hak_front_trim(size_t pad) {
  (void)pad;
  hak_os_counters_t before, after;
  hak_os_counters(&before);
  maintain(1);
  hak_os_counters(&after);
  return after.calls[HAK_OS_DECOMMIT] + after.calls[HAK_OS_RELEASE] >
         before.calls[HAK_OS_DECOMMIT] + before.calls[HAK_OS_RELEASE];
}

/* glibc's tunables have no meaning here; the ones programs commonly set are accepted. */
int hak_front_mallopt(int param, int value) {
  (void)value;
  switch (param) {
    case M_TRIM_THRESHOLD:
    case M_TOP_PAD:
    case M_MMAP_THRESHOLD:
    case M_MMAP_MAX:
    case M_ARENA_MAX:
    case M_ARENA_TEST:
    case M_PERTURB:
    case M_CHECK_ACTION:
    case M_MXFAST:
      return 1;
    default:
      return 0;
  }
}

/* ---- Statistics. ---- */

void hak_stats_get(hak_stats_t *out) {
  memset(out, 0, sizeof *out);
  hak_os_counters_t os;
  hak_os_counters(&os);
  for (int k = 0; k < HAK_OS_KIND_COUNT; k++) {
    out->os_calls[k] = os.calls[k];
    out->os_bytes[k] = os.bytes[k];
    out->os_failures[k] = os.failures[k];
  }
  out->os_calls_total = hak_os_total_calls(&os);
  out->committed_bytes = (int64_t)os.bytes[HAK_OS_COMMIT] - (int64_t)os.bytes[HAK_OS_DECOMMIT];
  if (hak_front.ready) {
    hak_tiny_stats_t t;
    hak_tiny_stats(&t);
    out->tiny_refills = t.refills;
    out->tiny_overflows = t.overflows;
    out->tiny_remote_frees = t.remote_frees;
    out->tiny_slabs_in_use = t.slabs_in_use;
    out->tiny_superslabs = t.superslabs;
    out->tiny_empty_superslabs = t.empty_superslabs;
    out->tiny_decommitted_superslabs = t.decommitted_superslabs;
    out->foreign_frees += hak_tiny_foreign_frees();
  }
  if (pool_ready()) {
    hak_pool_stats_t p;
    hak_pool_stats(&p);
    out->pool_refills = p.refills;
    out->pool_remote_frees = p.remote_frees;
    out->pool_pages_in_use = p.pages_in_use;
    out->foreign_frees += p.foreign_frees;
  }
  hak_large_stats_t l;
  hak_large_stats(&l);
  out->large_live_blocks = l.live_blocks;
  out->large_live_bytes = l.live_bytes;
  out->large_cached_blocks = l.cached_blocks;
  out->large_cached_bytes = l.cached_bytes;
  out->bigcache_hits = l.cache_hits;
  out->bigcache_misses = l.cache_misses;
  out->large_unreleased_bytes = l.unreleased_bytes;
  out->foreign_frees += __atomic_load_n(&front_foreign_frees, __ATOMIC_RELAXED);
  out->reserved_bytes = hak_front.total;
}

static void line_u64(hak_buf_t *b, const char *label, uint64_t v) {
  hak_buf_str(b, "  ");
  hak_buf_str(b, label);
  hak_buf_str(b, " ");
  hak_buf_u64(b, v);
  hak_buf_str(b, "\n");
}

void hak_stats_print(int fd) {
  char text[4096];
  hak_buf_t b = {text, 0, sizeof text};
  hak_stats_t s;
  hak_stats_get(&s);
  hak_buf_str(&b, "hakmem stats (" HAK_VARIANT_NAME ", " HAK_VARIANT_FLAGS ")\n");
  line_u64(&b, "tiny refills", s.tiny_refills);
  line_u64(&b, "tiny overflows", s.tiny_overflows);
  line_u64(&b, "tiny remote frees", s.tiny_remote_frees);
  line_u64(&b, "tiny slabs in use", s.tiny_slabs_in_use);
  line_u64(&b, "tiny superslabs", s.tiny_superslabs);
  line_u64(&b, "tiny empty superslabs", s.tiny_empty_superslabs);
  line_u64(&b, "pool refills", s.pool_refills);
  line_u64(&b, "pool remote frees", s.pool_remote_frees);
  line_u64(&b, "pool pages in use", s.pool_pages_in_use);
  line_u64(&b, "large live blocks", s.large_live_blocks);
  line_u64(&b, "large live bytes", s.large_live_bytes);
  line_u64(&b, "bigcache hits", s.bigcache_hits);
  line_u64(&b, "bigcache misses", s.bigcache_misses);
  line_u64(&b, "bigcache cached bytes", s.large_cached_bytes);
  line_u64(&b, "large unreleased bytes", s.large_unreleased_bytes);
  line_u64(&b, "foreign frees", s.foreign_frees);
  line_u64(&b, "committed bytes", (uint64_t)(s.committed_bytes > 0 ? s.committed_bytes : 0));
  hak_buf_str(&b, "  memory system calls");
  for (int k = 0; k < HAK_OS_KIND_COUNT; k++) {
    hak_buf_str(&b, " ");
    hak_buf_str(&b, hak_os_kind_name((hak_os_kind_t)k));
    hak_buf_str(&b, "=");
    hak_buf_u64(&b, s.os_calls[k]);
  }
  hak_buf_str(&b, " total=");
  hak_buf_u64(&b, s.os_calls_total);
  hak_buf_str(&b, "\n");
  if (HAK_TRACE) {
    for (int r = 0; r < HAK_ROUTE_COUNT; r++) {
      hak_buf_str(&b, "  route ");
      hak_buf_str(&b, hak_route_names[r]);
      hak_buf_str(&b, " ");
      hak_buf_u64(&b, __atomic_load_n(&hak_route_counts[r], __ATOMIC_RELAXED));
      hak_buf_str(&b, "\n");
    }
  }
  hak_buf_flush(&b, fd);
}

void hak_front_malloc_stats(void) { hak_stats_print(2); }

const char *hak_variant(void) { return HAK_VARIANT_NAME " " HAK_VARIANT_FLAGS; }

/* Initialise at load as well, so HAKMEM_HELP and option warnings appear even in programs
 * that never allocate; the first malloc may still come earlier, from the loader. */
__attribute__((constructor)) static void front_load(void) {
  if (__atomic_load_n(&init_state, __ATOMIC_ACQUIRE) != 2) front_init();
}

__attribute__((destructor)) static void front_exit(void) {
  if (__atomic_load_n(&init_state, __ATOMIC_ACQUIRE) == 2 && hak_opt(HAK_OPT_STATS)) {
    hak_stats_print(stats_fd);
  }
}
