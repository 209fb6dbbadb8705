// Micro-benchmarks of the Large tier: BigCache hits, aligned blocks, in-place growth.
#include <stdlib.h>

#include "benchmark/benchmark.h"

namespace {

void BM_LargeMallocFree(benchmark::State &state) {
  size_t n = static_cast<size_t>(state.range(0));
  for (auto _ : state) {
    void *p = malloc(n);
    benchmark::DoNotOptimize(p);
    free(p);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_LargeMallocFree)->Arg(128 << 10)->Arg(1 << 20)->Arg(16 << 20);

void BM_LargeAlignedAlloc(benchmark::State &state) {
  for (auto _ : state) {
    void *p = aligned_alloc(size_t{1} << 20, 256 << 10);
    benchmark::DoNotOptimize(p);
    free(p);
  }
}
BENCHMARK(BM_LargeAlignedAlloc);

void BM_LargeReallocGrow(benchmark::State &state) {
  for (auto _ : state) {
    void *p = malloc(100 << 10);
    for (size_t n = 200 << 10; n <= (8 << 20); n *= 2) p = realloc(p, n);
    benchmark::DoNotOptimize(p);
    free(p);
  }
}
BENCHMARK(BM_LargeReallocGrow);

}  // namespace

BENCHMARK_MAIN();
