/* burst_idle: what an allocator gives back after a spike. A burst of blocks of 16 B ..
 * 320 KiB (each power of two with the same share of the bytes) is written and freed, then the
 * program goes quiet for IDLE_MS; the driver reports peak RSS, RSS right after the frees
 * and RSS at the end of the quiet phase, all read from /proc/self.
 *   mode 0: one thread allocates MIB MiB, keeps it all, frees it all; the quiet phase
 *           makes 64 malloc(64)+free pairs per millisecond (fast paths only).
 *   mode 1: the same burst, then a quiet phase with no allocator call at all.
 *   mode 2: a producer thread allocates MIB MiB in total and hands every block to a
 *           consumer thread that only frees (at most RING blocks in flight); the
 *           producer then stops allocating and both threads stay alive and quiet.
 *   mode 3: a thread allocates the whole burst and hands it to a thread that frees it
 *           all; then both stay alive and quiet (every block went back through a heap
 *           whose owner never allocates again).
 * The ops/s of the result line are blocks allocated per second of the burst.
 * usage: burst_idle MODE MIB IDLE_MS SEED */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <unistd.h>

#include "benchmarks/driver_util.h"

#define USAGE "MODE MIB IDLE_MS SEED   (defaults: 0 400 2000 1)"
#define RING 1024

/* 16 << j bytes plus up to a quarter more (16 B .. 320 KiB), j = 0..14 with probability
 * 2^-(j+1): every power of two gets about the same share of the bytes, so about half of
 * them are in blocks of at most 1 KiB and most blocks are small. */
static size_t burst_size(drv_rng_t *rng) {
  uint64_t r = drv_next(rng) | (1ull << 14);
  size_t base = (size_t)16 << __builtin_ctzll(r);
  return base + (size_t)drv_range(rng, 0, base / 4);
}

/* Fills a block with a pattern of its index that check() verifies before the free. */
static void fill(uint64_t *b, size_t n, uint64_t i) {
  for (size_t k = 0; k < n / 8; k += 512) b[k] = i + k;
}

static int check(const uint64_t *b, size_t n, uint64_t i) {
  for (size_t k = 0; k < n / 8; k += 512)
    if (b[k] != i + k) return 0;
  return 1;
}

/* A burst: every block written with its index, kept until burst_free. */
typedef struct {
  uint64_t **ptr;
  size_t *len;
  uint64_t blocks;
} burst_t;

/* Allocates `bytes` in blocks of burst_size; returns 0, or 1 when an allocation failed. */
static int burst_alloc(burst_t *b, uint64_t bytes, uint64_t seed) {
  drv_rng_t rng;
  drv_seed(&rng, seed);
  uint64_t cap = 1024, total = 0;
  b->ptr = malloc(cap * sizeof *b->ptr);
  b->len = malloc(cap * sizeof *b->len);
  for (b->blocks = 0; total < bytes; b->blocks++) {
    if (b->blocks == cap) {
      cap *= 2;
      b->ptr = realloc(b->ptr, cap * sizeof *b->ptr);
      b->len = realloc(b->len, cap * sizeof *b->len);
    }
    if (!b->ptr || !b->len) return 1;
    size_t n = burst_size(&rng);
    uint64_t *p = malloc(n);
    if (!p) return 1;
    fill(p, n, b->blocks);
    b->ptr[b->blocks] = p;
    b->len[b->blocks] = n;
    total += n;
  }
  return 0;
}

/* Checks and frees every block, and the burst's arrays; returns 1 if one lost its data. */
static int burst_free(burst_t *b) {
  int bad = 0;
  for (uint64_t i = 0; i < b->blocks; i++) {
    if (!check(b->ptr[i], b->len[i], i)) bad = 1;
    free(b->ptr[i]);
  }
  free(b->ptr);
  free(b->len);
  return bad;
}

static uint64_t peak_kib(void) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  unsigned long long kib = 0;
  while (f && fgets(line, sizeof line, f))
    if (sscanf(line, "VmHWM: %llu", &kib) == 1) break;
  if (f) fclose(f);
  return kib;
}

static void sleep_ms(uint64_t ms) {
  struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000};
  nanosleep(&ts, NULL);
}

typedef struct {
  _Atomic(void *) slot[RING];
  size_t size[RING];
  uint64_t bytes, seed, blocks;
  int failed;
  atomic_int done;
} pc_t;

static void *producer(void *arg) {
  pc_t *p = arg;
  drv_rng_t rng;
  drv_seed(&rng, p->seed);
  uint64_t total = 0, i = 0;
  for (; total < p->bytes; i++) {
    size_t n = burst_size(&rng);
    uint64_t *b = malloc(n);
    if (!b) {
      p->failed = 1;
      break;
    }
    fill(b, n, i);
    total += n;
    _Atomic(void *) *s = &p->slot[i % RING];
    while (atomic_load_explicit(s, memory_order_acquire) != NULL) sched_yield();
    p->size[i % RING] = n;
    atomic_store_explicit(s, b, memory_order_release);
  }
  p->blocks = i;
  atomic_store_explicit(&p->done, 1, memory_order_release);
  while (atomic_load_explicit(&p->done, memory_order_acquire) != 2) sleep_ms(1);
  return NULL;
}

static void *consumer(void *arg) {
  pc_t *p = arg;
  for (uint64_t i = 0;; i++) {
    _Atomic(void *) *s = &p->slot[i % RING];
    uint64_t *b;
    while ((b = atomic_load_explicit(s, memory_order_acquire)) == NULL) {
      if (atomic_load_explicit(&p->done, memory_order_acquire) && i >= p->blocks) goto quiet;
      sched_yield();
    }
    size_t n = p->size[i % RING];
    atomic_store_explicit(s, NULL, memory_order_release);
    if (!check(b, n, i)) p->failed = 1;
    free(b);
  }
quiet:
  while (atomic_load_explicit(&p->done, memory_order_acquire) != 2) sleep_ms(1);
  return NULL;
}

typedef struct {
  uint64_t bytes, seed;
  burst_t burst;
  int failed;
  atomic_int stage; /* 1: allocated, 2: freed, 3: exit */
} handoff_t;

static void *handoff_producer(void *arg) {
  handoff_t *h = arg;
  h->failed = burst_alloc(&h->burst, h->bytes, h->seed);
  atomic_store_explicit(&h->stage, 1, memory_order_release);
  while (atomic_load_explicit(&h->stage, memory_order_acquire) != 3) sleep_ms(1);
  return NULL;
}

static void *handoff_consumer(void *arg) {
  handoff_t *h = arg;
  while (atomic_load_explicit(&h->stage, memory_order_acquire) != 1) sleep_ms(1);
  if (burst_free(&h->burst)) h->failed = 1;
  atomic_store_explicit(&h->stage, 2, memory_order_release);
  while (atomic_load_explicit(&h->stage, memory_order_acquire) != 3) sleep_ms(1);
  return NULL;
}

int main(int argc, char **argv) {
  drv_check_argc(argc, argv, 4, USAGE);
  uint64_t mode = drv_arg(argc, argv, 1, 0, 0, 3, USAGE);
  uint64_t mib = drv_arg(argc, argv, 2, 400, 1, 1 << 20, USAGE);
  uint64_t idle_ms = drv_arg(argc, argv, 3, 2000, 0, 3600000, USAGE);
  uint64_t seed = drv_arg(argc, argv, 4, 1, 0, UINT64_MAX, USAGE);
  int failed = 0;
  uint64_t blocks = 0, after_free, after_idle;
  double start = drv_now(), secs;
  if (mode < 2) {
    burst_t b;
    if (burst_alloc(&b, mib << 20, seed)) return 1;
    secs = drv_now() - start;
    blocks = b.blocks;
    failed = burst_free(&b);
    after_free = (uint64_t)drv_rss_kib();
    double quiet_end = drv_now() + (double)idle_ms / 1000;
    while (drv_now() < quiet_end) {
      if (mode == 0) {
        for (int k = 0; k < 64; k++) {
          void *volatile q = malloc(64);
          free(q);
        }
      }
      sleep_ms(1);
    }
    after_idle = (uint64_t)drv_rss_kib();
  } else if (mode == 3) {
    handoff_t h = {.bytes = mib << 20, .seed = seed};
    pthread_t th[2];
    pthread_create(&th[0], NULL, handoff_producer, &h);
    pthread_create(&th[1], NULL, handoff_consumer, &h);
    while (atomic_load_explicit(&h.stage, memory_order_acquire) != 2) sleep_ms(1);
    secs = drv_now() - start;
    blocks = h.burst.blocks;
    after_free = (uint64_t)drv_rss_kib();
    sleep_ms(idle_ms);
    after_idle = (uint64_t)drv_rss_kib();
    drv_report("burst_idle", blocks, secs); /* with both threads still alive */
    atomic_store_explicit(&h.stage, 3, memory_order_release);
    pthread_join(th[0], NULL);
    pthread_join(th[1], NULL);
    failed = h.failed;
  } else {
    pc_t *p = calloc(1, sizeof *p);
    p->bytes = mib << 20;
    p->seed = seed;
    pthread_t th[2];
    pthread_create(&th[0], NULL, producer, p);
    pthread_create(&th[1], NULL, consumer, p);
    while (atomic_load_explicit(&p->done, memory_order_acquire) != 1) sleep_ms(1);
    /* The consumer may still be freeing the last blocks of the ring. */
    for (uint64_t k = 0; k < RING; k++)
      while (atomic_load_explicit(&p->slot[k], memory_order_acquire) != NULL) sleep_ms(1);
    secs = drv_now() - start;
    blocks = p->blocks;
    after_free = (uint64_t)drv_rss_kib();
    sleep_ms(idle_ms);
    after_idle = (uint64_t)drv_rss_kib();
    drv_report("burst_idle", blocks, secs); /* with both threads still alive */
    atomic_store_explicit(&p->done, 2, memory_order_release);
    pthread_join(th[0], NULL);
    pthread_join(th[1], NULL);
    failed = p->failed;
  }
  if (mode < 2) drv_report("burst_idle", blocks, secs);
  printf("rss_kib: peak %llu after_free %llu after_idle %llu\n", (unsigned long long)peak_kib(),
         (unsigned long long)after_free, (unsigned long long)after_idle);
  if (failed) fprintf(stderr, "burst_idle: a block lost its contents or an allocation failed\n");
  return failed ? 1 : 0;
}
