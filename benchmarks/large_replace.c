/* large_replace: threads keep WORKSET live big blocks each and replace a random one per
 * step with a block of MIN_KIB..MAX_KIB: buffers of a media or compression service.
 * FILL says how a block is made and used:
 *   0: malloc, then one byte written per page;
 *   1: calloc, every page checked to read zero, then one byte written per page (a block
 *      that fails the check stops the run);
 *   2: malloc, then every byte cleared with memset: a zero-filled buffer as C++'s
 *      std::make_unique<char[]>(n) makes it (mimalloc-bench's malloc-large, 5-25 MiB).
 * usage: large_replace THREADS ITERS WORKSET MIN_KIB MAX_KIB FILL SEED */
#include <pthread.h>

#include "benchmarks/driver_util.h"

#define USAGE \
  "THREADS ITERS WORKSET MIN_KIB MAX_KIB FILL SEED   (defaults: 1 2000 20 5120 25600 2 1)"

typedef struct {
  uint64_t iters, workset, min, max, fill, seed;
  int failed; /* 1: no memory, 2: a calloc'd page was not zero */
} replace_args_t;

static void *replace_thread(void *arg) {
  replace_args_t *a = arg;
  void **slots = calloc(a->workset, sizeof *slots);
  drv_rng_t rng;
  drv_seed(&rng, a->seed);
  for (uint64_t i = 0; i < a->iters && !a->failed; i++) {
    uint64_t k = drv_next(&rng) % a->workset;
    free(slots[k]);
    size_t n = (size_t)drv_range(&rng, a->min, a->max) << 10;
    unsigned char *p = a->fill == 1 ? calloc(1, n) : malloc(n);
    slots[k] = p;
    if (!p) {
      a->failed = 1;
      break;
    }
    if (a->fill == 2) {
      memset(p, 0, n);
      p[n - 1] = (unsigned char)(i + 1);
      continue;
    }
    for (size_t off = 0; off < n; off += 4096) {
      if (a->fill == 1 && p[off] != 0) a->failed = 2;
      p[off] = (unsigned char)(i + 1);
    }
  }
  for (uint64_t k = 0; k < a->workset; k++) free(slots[k]);
  free(slots);
  return NULL;
}

int main(int argc, char **argv) {
  drv_check_argc(argc, argv, 7, USAGE);
  uint64_t threads = drv_arg(argc, argv, 1, 1, 1, 1024, USAGE);
  uint64_t iters = drv_arg(argc, argv, 2, 2000, 1, 1ull << 40, USAGE);
  uint64_t workset = drv_arg(argc, argv, 3, 20, 1, 1 << 20, USAGE);
  uint64_t min = drv_arg(argc, argv, 4, 5120, 1, 1 << 24, USAGE);
  uint64_t max = drv_arg(argc, argv, 5, 25600, min, 1 << 24, USAGE);
  uint64_t fill = drv_arg(argc, argv, 6, 2, 0, 2, USAGE);
  uint64_t seed = drv_arg(argc, argv, 7, 1, 0, UINT64_MAX, USAGE);
  replace_args_t *args = calloc(threads, sizeof *args);
  pthread_t *th = calloc(threads, sizeof *th);
  double start = drv_now();
  for (uint64_t t = 0; t < threads; t++) {
    args[t] = (replace_args_t){iters, workset, min, max, fill, seed + t, 0};
    if (pthread_create(&th[t], NULL, replace_thread, &args[t]) != 0) return 1;
  }
  int failed = 0;
  for (uint64_t t = 0; t < threads; t++) {
    pthread_join(th[t], NULL);
    if (args[t].failed > failed) failed = args[t].failed;
  }
  double elapsed = drv_now() - start;
  free(args);
  free(th);
  if (failed) {
    fprintf(stderr, "large_replace: %s\n",
            failed == 2 ? "a calloc'd page was not zero" : "allocation failed");
    return 1;
  }
  drv_report("large_replace", threads * iters * 2, elapsed);
  return 0;
}
