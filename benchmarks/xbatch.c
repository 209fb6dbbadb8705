/* xbatch: cross-thread frees in batches (the pattern of xmalloc-test, which mimalloc-bench
 * runs at 64 bytes). Each producer allocates batches of BATCH blocks of SIZE bytes, stamps
 * them and hands each whole batch to its consumer, which checks the stamps and frees every
 * block: all frees are of another thread's blocks, with no per-block synchronisation
 * between the threads, so the allocator's remote free is what is measured.
 * usage: xbatch PAIRS BATCHES BATCH SIZE */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

#include "benchmarks/threads_driver.h"

#define USAGE "PAIRS BATCHES BATCH SIZE   (defaults: 1 20000 256 64)"
#define DEPTH 8 /* batches in flight per pair */

typedef struct {
  _Atomic(void **) slot[DEPTH];
  uint64_t batches, batch, size;
  int failed;
} pair_t;

static void *producer(void *arg) {
  pair_t *p = arg;
  for (uint64_t i = 0; i < p->batches; i++) {
    void **b = malloc(p->batch * sizeof *b);
    if (!b) {
      p->failed = 1;
      return NULL;
    }
    for (uint64_t k = 0; k < p->batch; k++) {
      uint64_t *block = malloc(p->size);
      if (!block) {
        p->failed = 1;
        block = malloc(sizeof *block);
      }
      block[0] = i ^ k;
      b[k] = block;
    }
    _Atomic(void **) *s = &p->slot[i % DEPTH];
    while (atomic_load_explicit(s, memory_order_acquire) != NULL) sched_yield();
    atomic_store_explicit(s, b, memory_order_release);
  }
  return NULL;
}

static void *consumer(void *arg) {
  pair_t *p = arg;
  for (uint64_t i = 0; i < p->batches; i++) {
    _Atomic(void **) *s = &p->slot[i % DEPTH];
    void **b;
    while ((b = atomic_load_explicit(s, memory_order_acquire)) == NULL) sched_yield();
    atomic_store_explicit(s, NULL, memory_order_release);
    for (uint64_t k = 0; k < p->batch; k++) {
      uint64_t *block = b[k];
      if (block[0] != (i ^ k)) p->failed = 1;
      free(block);
    }
    free(b);
  }
  return NULL;
}

int main(int argc, char **argv) {
  drv_check_argc(argc, argv, 4, USAGE);
  uint64_t pairs = drv_arg(argc, argv, 1, 1, 1, 512, USAGE);
  uint64_t batches = drv_arg(argc, argv, 2, 20000, 1, 1ull << 40, USAGE);
  uint64_t batch = drv_arg(argc, argv, 3, 256, 1, 1 << 20, USAGE);
  uint64_t size = drv_arg(argc, argv, 4, 64, 8, 1 << 20, USAGE);
  pair_t *p = calloc(pairs, sizeof *p);
  for (uint64_t i = 0; i < pairs; i++) {
    p[i].batches = batches;
    p[i].batch = batch;
    p[i].size = size;
  }
  double elapsed = drv_run_pairs(pairs, p, sizeof *p, producer, consumer);
  int failed = 0;
  for (uint64_t i = 0; i < pairs; i++) failed |= p[i].failed;
  free(p);
  if (failed) {
    fprintf(stderr, "xbatch: allocation failed or data corrupted\n");
    return 1;
  }
  drv_report("xbatch", pairs * batches * batch * 2, elapsed);
  return 0;
}
