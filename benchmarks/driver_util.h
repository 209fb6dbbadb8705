/* Shared pieces of the workload drivers: argument parsing with usage errors, a seeded
 * generator, a monotonic clock and the one-line result format the compare tool reads.
 * The drivers use only the standard malloc family, so any allocator can be preloaded. */
#ifndef HAK_BENCHMARKS_DRIVER_UTIL_H
#define HAK_BENCHMARKS_DRIVER_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* xorshift64*: deterministic for a seed, cheap enough not to dominate a malloc. */
typedef struct {
  uint64_t s;
} drv_rng_t;

static inline void drv_seed(drv_rng_t *r, uint64_t seed) {
  r->s = seed * 0x9e3779b97f4a7c15ULL + 1;
}

static inline uint64_t drv_next(drv_rng_t *r) {
  r->s ^= r->s >> 12;
  r->s ^= r->s << 25;
  r->s ^= r->s >> 27;
  return r->s * 0x2545f4914f6cdd1dULL;
}

/* Uniform in [lo, hi]. */
static inline uint64_t drv_range(drv_rng_t *r, uint64_t lo, uint64_t hi) {
  return lo + drv_next(r) % (hi - lo + 1);
}

static inline double drv_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Parses argv[i] as an unsigned number within [lo, hi] or exits 2 with the usage. */
static inline uint64_t drv_arg(int argc, char **argv, int i, uint64_t def, uint64_t lo, uint64_t hi,
                               const char *usage) {
  if (i >= argc) return def;
  char *end = NULL;
  unsigned long long v = strtoull(argv[i], &end, 10);
  if (end == argv[i] || *end != '\0' || v < lo || v > hi || argv[i][0] == '-') {
    fprintf(stderr, "%s: bad argument %d '%s' (expected %llu..%llu)\nusage: %s %s\n", argv[0], i,
            argv[i], (unsigned long long)lo, (unsigned long long)hi, argv[0], usage);
    exit(2);
  }
  return v;
}

static inline void drv_check_argc(int argc, char **argv, int max, const char *usage) {
  if (argc > max + 1 || (argc > 1 && strcmp(argv[1], "--help") == 0)) {
    fprintf(stderr, "usage: %s %s\n", argv[0], usage);
    exit(2);
  }
}

/* The process's resident set now, in KiB (/proc/self/statm), or 0 if unreadable. */
static inline unsigned long long drv_rss_kib(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  unsigned long long size = 0, rss = 0;
  if (f) {
    if (fscanf(f, "%llu %llu", &size, &rss) != 2) rss = 0;
    fclose(f);
  }
  return rss * (unsigned long long)sysconf(_SC_PAGESIZE) / 1024;
}

/* The result lines: "<driver>: <ops> ops in <seconds> s = <ops/s> ops/s", then
 * "rss_after_free_kib: <KiB>". Every driver calls it after freeing all it allocated, so
 * the second is what the allocator still holds (the compare table's "RSS after free"). */
static inline void drv_report(const char *name, uint64_t ops, double seconds) {
  printf("%s: %llu ops in %.3f s = %.0f ops/s\n", name, (unsigned long long)ops, seconds,
         seconds > 0 ? (double)ops / seconds : 0.0);
  printf("rss_after_free_kib: %llu\n", drv_rss_kib());
}

/* Touches the first and last byte so the allocator's memory is really used. */
static inline void drv_touch(void *p, size_t n) {
  if (n) {
    ((volatile char *)p)[0] = 1;
    ((volatile char *)p)[n - 1] = 2;
  }
}

#endif /* HAK_BENCHMARKS_DRIVER_UTIL_H */
