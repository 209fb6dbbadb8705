/* realloc_grow: strings and vectors that grow by realloc, from a few bytes through every
 * tier up to MAX bytes, as parsers and builders do. Each step checks the contents moved.
 * usage: realloc_grow ROUNDS MAX SEED */
#include "benchmarks/driver_util.h"

#define USAGE "ROUNDS MAX SEED   (defaults: 3000 1048576 1)"

int main(int argc, char **argv) {
  drv_check_argc(argc, argv, 3, USAGE);
  uint64_t rounds = drv_arg(argc, argv, 1, 3000, 1, 1ull << 32, USAGE);
  uint64_t max = drv_arg(argc, argv, 2, 1 << 20, 16, 1ull << 34, USAGE);
  uint64_t seed = drv_arg(argc, argv, 3, 1, 0, UINT64_MAX, USAGE);
  drv_rng_t rng;
  drv_seed(&rng, seed);
  uint64_t ops = 0;
  double start = drv_now();
  for (uint64_t r = 0; r < rounds; r++) {
    size_t limit = (size_t)drv_range(&rng, 16, max);
    size_t n = 8;
    unsigned char *p = malloc(n);
    if (!p) return 1;
    p[0] = (unsigned char)r;
    p[n - 1] = (unsigned char)(n - 1);
    while (n < limit) {
      size_t grow = n / 2 + (size_t)drv_range(&rng, 1, 64);  /* x1.5 plus a little */
      unsigned char *q = realloc(p, n + grow);
      if (!q || q[0] != (unsigned char)r || q[n - 1] != (unsigned char)(n - 1)) {
        fprintf(stderr, "realloc_grow: contents lost at %zu bytes\n", n);
        return 1;
      }
      p = q;
      n += grow;
      p[n - 1] = (unsigned char)(n - 1);
      ops++;
    }
    free(p);
    ops += 2;
  }
  drv_report("realloc_grow", ops, drv_now() - start);
  return 0;
}
