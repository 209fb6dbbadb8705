/* pair_loop: COUNT malloc+free pairs of SIZE bytes, nothing else. Run under callgrind
 * at two counts, the difference divided by the difference of counts is the instruction
 * cost of one pair with start-up removed (tools/fastpath_instructions.sh).
 * usage: pair_loop SIZE COUNT */
#include "benchmarks/driver_util.h"

#define USAGE "SIZE COUNT"

int main(int argc, char **argv) {
  drv_check_argc(argc, argv, 2, USAGE);
  uint64_t size = drv_arg(argc, argv, 1, 64, 0, 1ull << 32, USAGE);
  uint64_t count = drv_arg(argc, argv, 2, 100000, 0, 1ull << 40, USAGE);
  void *keep = malloc(size); /* warm the size class before counting */
  free(keep);
  for (uint64_t i = 0; i < count; i++) {
    void *volatile p = malloc(size);
    free(p);
  }
  return 0;
}
