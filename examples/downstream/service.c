/* A toy request handler whose every allocation goes to hakmem (malloc = ...). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "allocator/hakmem.h"

int main(void) {
  char *requests[1000];
  for (int i = 0; i < 1000; i++) {
    requests[i] = malloc(64 + (size_t)i * 37);
    snprintf(requests[i], 64, "request %d", i);
  }
  size_t total = 0;
  for (int i = 0; i < 1000; i++) {
    total += strlen(requests[i]);
    free(requests[i]);
  }
  hak_stats_t s;
  hak_stats_get(&s);
  printf("handled %zu bytes of requests on %s (tiny refills %llu)\n", total, hak_variant(),
         (unsigned long long)s.tiny_refills);
  return s.tiny_refills > 0 ? 0 : 1;
}
