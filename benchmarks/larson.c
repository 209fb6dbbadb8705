/* larson: the server workload of Larson and Krishnan. Each thread owns an array of
 * CHUNKS slots and replaces random slots with blocks of MIN..MAX bytes; after ROUNDS
 * replacements it hands the array to a new thread and exits, so blocks are freed by
 * threads other than the one that allocated them.
 * usage: larson SECONDS MIN MAX CHUNKS ROUNDS SEED THREADS */
#include <pthread.h>
#include <stdatomic.h>

#include "benchmarks/driver_util.h"

#define USAGE "SECONDS MIN MAX CHUNKS ROUNDS SEED THREADS   (defaults: 2 8 1024 1000 10000 1 2)"

typedef struct {
  void **slots;
  uint64_t chunks, rounds, min, max;
  drv_rng_t rng;
  double deadline;
  int done;
} lane_t;

static atomic_ullong total_ops;
static atomic_int failed;

static void *lane_run(void *arg) {
  lane_t *l = arg;
  for (uint64_t i = 0; i < l->rounds; i++) {
    uint64_t k = drv_next(&l->rng) % l->chunks;
    free(l->slots[k]);
    size_t n = (size_t)drv_range(&l->rng, l->min, l->max);
    l->slots[k] = malloc(n);
    if (!l->slots[k]) failed = 1;
    drv_touch(l->slots[k], n);
  }
  atomic_fetch_add(&total_ops, l->rounds * 2);
  if (drv_now() < l->deadline && !failed) {
    pthread_t next; /* the array moves on to a fresh thread */
    if (pthread_create(&next, NULL, lane_run, l) == 0) {
      pthread_detach(next);
      return NULL;
    }
  }
  __atomic_store_n(&l->done, 1, __ATOMIC_RELEASE);
  return NULL;
}

int main(int argc, char **argv) {
  drv_check_argc(argc, argv, 7, USAGE);
  uint64_t seconds = drv_arg(argc, argv, 1, 2, 1, 3600, USAGE);
  uint64_t min = drv_arg(argc, argv, 2, 8, 1, 1 << 30, USAGE);
  uint64_t max = drv_arg(argc, argv, 3, 1024, min, 1 << 30, USAGE);
  uint64_t chunks = drv_arg(argc, argv, 4, 1000, 1, 1 << 24, USAGE);
  uint64_t rounds = drv_arg(argc, argv, 5, 10000, 1, 1ull << 40, USAGE);
  uint64_t seed = drv_arg(argc, argv, 6, 1, 0, UINT64_MAX, USAGE);
  uint64_t threads = drv_arg(argc, argv, 7, 2, 1, 1024, USAGE);
  lane_t *lanes = calloc(threads, sizeof *lanes);
  double start = drv_now();
  for (uint64_t t = 0; t < threads; t++) {
    lane_t *l = &lanes[t];
    l->slots = calloc(chunks, sizeof *l->slots);
    l->chunks = chunks;
    l->rounds = rounds;
    l->min = min;
    l->max = max;
    l->deadline = start + (double)seconds;
    drv_seed(&l->rng, seed + t);
    pthread_t th;
    if (pthread_create(&th, NULL, lane_run, l) != 0) return 1;
    pthread_detach(th);
  }
  for (;;) {
    uint64_t finished = 0;
    for (uint64_t t = 0; t < threads; t++)
      finished += (uint64_t)__atomic_load_n(&lanes[t].done, __ATOMIC_ACQUIRE);
    if (finished == threads) break;
    struct timespec ts = {0, 1000000};
    nanosleep(&ts, NULL);
  }
  double elapsed = drv_now() - start;
  for (uint64_t t = 0; t < threads; t++) {
    for (uint64_t k = 0; k < chunks; k++) free(lanes[t].slots[k]);
    free(lanes[t].slots);
  }
  free(lanes);
  if (failed) {
    fprintf(stderr, "larson: allocation failed\n");
    return 1;
  }
  drv_report("larson", atomic_load(&total_ops), elapsed);
  return 0;
}
