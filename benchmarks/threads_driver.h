/* The multi-threaded ring workload shared by mid_large_mt and pool_tls: each thread
 * replaces random slots of its own working set with blocks of MIN..MAX bytes. */
#ifndef HAK_BENCHMARKS_THREADS_DRIVER_H
#define HAK_BENCHMARKS_THREADS_DRIVER_H

#include <pthread.h>

#include "benchmarks/driver_util.h"

typedef struct {
  uint64_t iters, workset, seed, min, max;
  int failed;
} ring_args_t;

static inline void *ring_thread(void *arg) {
  ring_args_t *a = arg;
  void **slots = calloc(a->workset, sizeof *slots);
  drv_rng_t rng;
  drv_seed(&rng, a->seed);
  for (uint64_t i = 0; i < a->iters; i++) {
    uint64_t k = drv_next(&rng) % a->workset;
    free(slots[k]);
    size_t n = (size_t)drv_range(&rng, a->min, a->max);
    slots[k] = malloc(n);
    if (!slots[k]) a->failed = 1;
    drv_touch(slots[k], n);
  }
  for (uint64_t k = 0; k < a->workset; k++) free(slots[k]);
  free(slots);
  return NULL;
}

/* Runs a producer and a consumer thread on each of the `pairs` records at `records`
 * (`stride` bytes apart) and joins them all; returns the seconds it took. */
static inline double drv_run_pairs(uint64_t pairs, void *records, size_t stride,
                                   void *(*producer)(void *), void *(*consumer)(void *)) {
  pthread_t *th = calloc(pairs * 2, sizeof *th);
  double start = drv_now();
  for (uint64_t i = 0; i < pairs; i++) {
    char *record = (char *)records + i * stride;
    pthread_create(&th[2 * i], NULL, producer, record);
    pthread_create(&th[2 * i + 1], NULL, consumer, record);
  }
  for (uint64_t i = 0; i < pairs * 2; i++) pthread_join(th[i], NULL);
  double elapsed = drv_now() - start;
  free(th);
  return elapsed;
}

/* Parses THREADS ITERS WORKSET SEED, runs, reports; returns the exit code. */
static inline int ring_main(int argc, char **argv, const char *name, uint64_t min, uint64_t max,
                            const char *usage) {
  drv_check_argc(argc, argv, 4, usage);
  uint64_t threads = drv_arg(argc, argv, 1, 2, 1, 1024, usage);
  uint64_t iters = drv_arg(argc, argv, 2, 12000000, 1, 1ull << 40, usage);
  uint64_t workset = drv_arg(argc, argv, 3, 256, 1, 1 << 24, usage);
  uint64_t seed = drv_arg(argc, argv, 4, 1, 0, UINT64_MAX, usage);
  ring_args_t *args = calloc(threads, sizeof *args);
  pthread_t *th = calloc(threads, sizeof *th);
  double start = drv_now();
  for (uint64_t t = 0; t < threads; t++) {
    args[t] = (ring_args_t){iters, workset, seed + t, min, max, 0};
    if (pthread_create(&th[t], NULL, ring_thread, &args[t]) != 0) return 1;
  }
  int failed = 0;
  for (uint64_t t = 0; t < threads; t++) {
    pthread_join(th[t], NULL);
    failed |= args[t].failed;
  }
  double elapsed = drv_now() - start;
  free(args);
  free(th);
  if (failed) {
    fprintf(stderr, "%s: allocation failed\n", name);
    return 1;
  }
  drv_report(name, threads * iters * 2, elapsed);
  return 0;
}

#endif /* HAK_BENCHMARKS_THREADS_DRIVER_H */
