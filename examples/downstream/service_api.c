/* A component that keeps its own data on hakmem through hak_* while the rest of the
 * process stays on the system allocator. */
#include <stdio.h>
#include <stdlib.h>

#include "allocator/hakmem.h"

int main(void) {
  double *samples = hak_calloc(100000, sizeof *samples);
  if (!samples) return 1;
  for (int i = 0; i < 100000; i++) samples[i] = i * 0.5;
  samples = hak_realloc(samples, 200000 * sizeof *samples);
  char *system_owned = malloc(32); /* untouched by hakmem */
  hak_stats_t s;
  hak_stats_get(&s);
  printf("sample %.1f, large blocks live %llu\n", samples[99999],
         (unsigned long long)s.large_live_blocks);
  free(system_owned);
  hak_free(samples);
  return s.large_live_blocks == 1 ? 0 : 1;
}
