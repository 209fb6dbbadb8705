// Micro-benchmarks of the Tiny tier through the standard names (the binary's malloc is
// hakmem): a malloc+free pair per size, batches, and frees of another thread's blocks.
#include <stdlib.h>

#include <thread>
#include <vector>

#include "benchmark/benchmark.h"

namespace {

void BM_TinyMallocFree(benchmark::State &state) {
  size_t n = static_cast<size_t>(state.range(0));
  for (auto _ : state) {
    void *p = malloc(n);
    benchmark::DoNotOptimize(p);
    free(p);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_TinyMallocFree)->Arg(16)->Arg(64)->Arg(256)->Arg(1024);

// 1,000 allocations then 1,000 frees: exercises refill and overflow, not just one block.
void BM_TinyBatch(benchmark::State &state) {
  size_t n = static_cast<size_t>(state.range(0));
  std::vector<void *> blocks(1000);
  for (auto _ : state) {
    for (void *&p : blocks) p = malloc(n);
    benchmark::DoNotOptimize(blocks.data());
    for (void *p : blocks) free(p);
  }
  state.SetItemsProcessed(state.iterations() * 1000);
}
BENCHMARK(BM_TinyBatch)->Arg(32)->Arg(512);

// Blocks allocated on one thread and freed on another (the remote-free path).
void BM_TinyCrossThreadFree(benchmark::State &state) {
  std::vector<void *> blocks(4096);
  for (auto _ : state) {
    for (void *&p : blocks) p = malloc(48);
    std::thread([&] {
      for (void *p : blocks) free(p);
    }).join();
  }
  state.SetItemsProcessed(state.iterations() * blocks.size());
}
BENCHMARK(BM_TinyCrossThreadFree);

void BM_TinyAlignedAlloc(benchmark::State &state) {
  size_t align = static_cast<size_t>(state.range(0));
  for (auto _ : state) {
    void *p = aligned_alloc(align, 64);
    benchmark::DoNotOptimize(p);
    free(p);
  }
}
BENCHMARK(BM_TinyAlignedAlloc)->Arg(32)->Arg(64)->Arg(128);

}  // namespace

BENCHMARK_MAIN();
