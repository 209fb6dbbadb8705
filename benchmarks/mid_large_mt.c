/* mid_large_mt: threads churn 8..32 KiB blocks in their own working sets.
 * usage: mid_large_mt THREADS ITERS WORKSET SEED */
#include "benchmarks/threads_driver.h"

int main(int argc, char **argv) {
  return ring_main(argc, argv, "mid_large_mt", 8 * 1024, 32 * 1024,
                   "THREADS ITERS WORKSET SEED   (defaults: 2 12000000 256 1)");
}
