/* cache_thrash: each thread repeatedly allocates a small object, writes it many times and
 * frees it. An allocator that gives neighbouring threads objects in the same cache line
 * makes the threads fight over that line (false sharing).
 * usage: cache_thrash THREADS ITERS WRITES SIZE */
#include <pthread.h>

#include "benchmarks/driver_util.h"

#define USAGE "THREADS ITERS WRITES SIZE   (defaults: 2 2500000 100 8)"

typedef struct {
  uint64_t iters, writes, size;
  int failed;
} worker_t;

static void *work(void *arg) {
  worker_t *w = arg;
  for (uint64_t i = 0; i < w->iters; i++) {
    volatile char *p = malloc(w->size);
    if (!p) {
      w->failed = 1;
      return NULL;
    }
    for (uint64_t k = 0; k < w->writes; k++) p[k % w->size] = (char)k;
    free((void *)p);
  }
  return NULL;
}

int main(int argc, char **argv) {
  drv_check_argc(argc, argv, 4, USAGE);
  uint64_t threads = drv_arg(argc, argv, 1, 2, 1, 1024, USAGE);
  uint64_t iters = drv_arg(argc, argv, 2, 2500000, 1, 1ull << 40, USAGE);
  uint64_t writes = drv_arg(argc, argv, 3, 100, 1, 1 << 20, USAGE);
  uint64_t size = drv_arg(argc, argv, 4, 8, 1, 1 << 20, USAGE);
  worker_t *w = calloc(threads, sizeof *w);
  pthread_t *th = calloc(threads, sizeof *th);
  double start = drv_now();
  for (uint64_t t = 0; t < threads; t++) {
    w[t] = (worker_t){iters, writes, size, 0};
    pthread_create(&th[t], NULL, work, &w[t]);
  }
  int failed = 0;
  for (uint64_t t = 0; t < threads; t++) {
    pthread_join(th[t], NULL);
    failed |= w[t].failed;
  }
  double elapsed = drv_now() - start;
  free(w);
  free(th);
  if (failed) return 1;
  drv_report("cache_thrash", threads * iters * 2, elapsed);
  return 0;
}
