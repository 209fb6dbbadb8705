/* pool_tls: threads churn blocks across the whole Pool range (1 KiB .. 64 KiB).
 * usage: pool_tls THREADS ITERS WORKSET SEED */
#include "benchmarks/threads_driver.h"

int main(int argc, char **argv) {
  return ring_main(argc, argv, "pool_tls", 1025, 64 * 1024,
                   "THREADS ITERS WORKSET SEED   (defaults: 2 12000000 256 1)");
}
