// Micro-benchmarks of the Pool tier (1 KiB .. 64 KiB) through the standard names.
#include <stdlib.h>

#include <thread>
#include <vector>

#include "benchmark/benchmark.h"

namespace {

void BM_PoolMallocFree(benchmark::State &state) {
  size_t n = static_cast<size_t>(state.range(0));
  for (auto _ : state) {
    void *p = malloc(n);
    benchmark::DoNotOptimize(p);
    free(p);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_PoolMallocFree)->Arg(2048)->Arg(8192)->Arg(32768)->Arg(65536);

void BM_PoolCrossThreadFree(benchmark::State &state) {
  std::vector<void *> blocks(512);
  for (auto _ : state) {
    for (void *&p : blocks) p = malloc(8192);
    std::thread([&] {
      for (void *p : blocks) free(p);
    }).join();
  }
  state.SetItemsProcessed(state.iterations() * blocks.size());
}
BENCHMARK(BM_PoolCrossThreadFree);

void BM_PoolAlignedAlloc(benchmark::State &state) {
  for (auto _ : state) {
    void *p = aligned_alloc(256, 4000);
    benchmark::DoNotOptimize(p);
    free(p);
  }
}
BENCHMARK(BM_PoolAlignedAlloc);

}  // namespace

BENCHMARK_MAIN();
