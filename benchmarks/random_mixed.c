/* random_mixed: one thread replaces random slots of a working set with blocks of random
 * sizes up to MAX_SIZE, touching each block.
 * usage: random_mixed ITERS MAX_SIZE SEED [WORKSET] */
#include "benchmarks/driver_util.h"

#define USAGE "ITERS MAX_SIZE SEED [WORKSET]   (defaults: 80000000 1024 1 1024)"

int main(int argc, char **argv) {
  drv_check_argc(argc, argv, 4, USAGE);
  uint64_t iters = drv_arg(argc, argv, 1, 80000000, 1, 1ull << 40, USAGE);
  uint64_t max = drv_arg(argc, argv, 2, 1024, 1, 1 << 30, USAGE);
  uint64_t seed = drv_arg(argc, argv, 3, 1, 0, UINT64_MAX, USAGE);
  uint64_t workset = drv_arg(argc, argv, 4, 1024, 1, 1 << 26, USAGE);
  void **slots = calloc(workset, sizeof *slots);
  drv_rng_t rng;
  drv_seed(&rng, seed);
  double start = drv_now();
  for (uint64_t i = 0; i < iters; i++) {
    uint64_t k = drv_next(&rng) % workset;
    free(slots[k]);
    size_t n = (size_t)drv_range(&rng, 1, max);
    slots[k] = malloc(n);
    if (!slots[k]) return 1;
    drv_touch(slots[k], n);
  }
  double elapsed = drv_now() - start;
  for (uint64_t k = 0; k < workset; k++) free(slots[k]);
  free(slots);
  drv_report("random_mixed", iters * 2, elapsed);
  return 0;
}
