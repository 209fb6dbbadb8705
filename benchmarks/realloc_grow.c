/* realloc_grow: strings and vectors built by realloc, as parsers and builders do. Each
 * round grows 16 buffers side by side, each by about 1.5x per step, to limits spread
 * log-uniformly from 16 bytes to MAX, so buffers cross every tier; a small temporary is
 * allocated and freed between steps. Every step checks that the contents moved.
 * usage: realloc_grow ROUNDS MAX SEED */
#include "benchmarks/driver_util.h"

#define USAGE "ROUNDS MAX SEED   (defaults: 2000 1048576 1)"
#define BUFFERS 16

typedef struct {
  unsigned char *p;
  size_t n, limit;
} buffer_t;

int main(int argc, char **argv) {
  drv_check_argc(argc, argv, 3, USAGE);
  uint64_t rounds = drv_arg(argc, argv, 1, 2000, 1, 1ull << 32, USAGE);
  uint64_t max = drv_arg(argc, argv, 2, 1 << 20, 32, 1ull << 34, USAGE);
  uint64_t seed = drv_arg(argc, argv, 3, 1, 0, UINT64_MAX, USAGE);
  unsigned max_bits = 63u - (unsigned)__builtin_clzll(max);
  drv_rng_t rng;
  drv_seed(&rng, seed);
  uint64_t ops = 0;
  double start = drv_now();
  for (uint64_t r = 0; r < rounds; r++) {
    buffer_t b[BUFFERS];
    unsigned growing = BUFFERS;
    for (unsigned i = 0; i < BUFFERS; i++) {
      unsigned bits = (unsigned)drv_range(&rng, 4, max_bits);
      b[i].limit = ((size_t)1 << bits) + (size_t)drv_range(&rng, 0, ((size_t)1 << bits) - 1);
      b[i].n = 8;
      b[i].p = malloc(8);
      if (!b[i].p) return 1;
      b[i].p[0] = (unsigned char)i;
      b[i].p[7] = 7;
    }
    while (growing) {
      buffer_t *x = &b[drv_next(&rng) % BUFFERS];
      if (x->n >= x->limit) continue;
      size_t grow = x->n / 2 + (size_t)drv_range(&rng, 1, 64);
      unsigned char *q = realloc(x->p, x->n + grow);
      if (!q || q[0] != (unsigned char)(x - b) || q[x->n - 1] != (unsigned char)(x->n - 1)) {
        fprintf(stderr, "realloc_grow: contents lost at %zu bytes\n", x->n);
        return 1;
      }
      x->p = q;
      x->n += grow;
      x->p[x->n - 1] = (unsigned char)(x->n - 1);
      if (x->n >= x->limit) growing--;
      void *tmp = malloc((size_t)drv_range(&rng, 8, 256));
      drv_touch(tmp, 8);
      free(tmp);
      ops += 3;
    }
    for (unsigned i = 0; i < BUFFERS; i++) free(b[i].p);
    ops += 2 * BUFFERS;
  }
  drv_report("realloc_grow", ops, drv_now() - start);
  return 0;
}
