/* xthread: producer/consumer pairs. Each producer allocates blocks of 16..512 bytes,
 * writes them and passes them through a single-producer ring to its consumer, which reads
 * and frees them: every free is a free of another thread's block.
 * usage: xthread PAIRS ITEMS SEED */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

#include "benchmarks/threads_driver.h"

#define USAGE "PAIRS ITEMS SEED   (defaults: 1 5000000 1)"
#define RING 1024

typedef struct {
  _Atomic(void *) slot[RING];
  uint64_t items, seed;
  int failed;
} pair_t;

static void *producer(void *arg) {
  pair_t *p = arg;
  drv_rng_t rng;
  drv_seed(&rng, p->seed);
  for (uint64_t i = 0; i < p->items; i++) {
    size_t n = (size_t)drv_range(&rng, 16, 512);
    uint64_t *b = malloc(n);
    if (!b) {
      p->failed = 1;
      b = malloc(16);
    }
    b[0] = i;
    _Atomic(void *) *s = &p->slot[i % RING];
    while (atomic_load_explicit(s, memory_order_acquire) != NULL) sched_yield();
    atomic_store_explicit(s, b, memory_order_release);
  }
  return NULL;
}

static void *consumer(void *arg) {
  pair_t *p = arg;
  for (uint64_t i = 0; i < p->items; i++) {
    _Atomic(void *) *s = &p->slot[i % RING];
    uint64_t *b;
    while ((b = atomic_load_explicit(s, memory_order_acquire)) == NULL) sched_yield();
    atomic_store_explicit(s, NULL, memory_order_release);
    if (b[0] != i) p->failed = 1;
    free(b);
  }
  return NULL;
}

int main(int argc, char **argv) {
  drv_check_argc(argc, argv, 3, USAGE);
  uint64_t pairs = drv_arg(argc, argv, 1, 1, 1, 512, USAGE);
  uint64_t items = drv_arg(argc, argv, 2, 5000000, 1, 1ull << 40, USAGE);
  uint64_t seed = drv_arg(argc, argv, 3, 1, 0, UINT64_MAX, USAGE);
  pair_t *p = calloc(pairs, sizeof *p);
  for (uint64_t i = 0; i < pairs; i++) {
    p[i].items = items;
    p[i].seed = seed + i;
  }
  double elapsed = drv_run_pairs(pairs, p, sizeof *p, producer, consumer);
  int failed = 0;
  for (uint64_t i = 0; i < pairs; i++) failed |= p[i].failed;
  free(p);
  if (failed) {
    fprintf(stderr, "xthread: allocation failed or data corrupted\n");
    return 1;
  }
  drv_report("xthread", pairs * items * 2, elapsed);
  return 0;
}
