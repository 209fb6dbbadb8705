// The cost of each kind of memory system call through the OS boundary, so the price of
// a miss in each tier is known.
#include "allocator/os_boundary/os.h"
#include "benchmark/benchmark.h"

namespace {

constexpr size_t kChunk = 2 << 20;

void BM_OsMapRelease(benchmark::State &state) {
  for (auto _ : state) {
    void *p = nullptr;
    if (hak_os_map(kChunk, 0, &p) != 0) state.SkipWithError("map failed");
    hak_os_release(p, kChunk);
  }
}
BENCHMARK(BM_OsMapRelease);

void BM_OsCommitTouchDecommit(benchmark::State &state) {
  void *range = nullptr;
  if (hak_os_reserve(kChunk, 0, &range) != 0) state.SkipWithError("reserve failed");
  for (auto _ : state) {
    hak_os_commit(range, kChunk);
    static_cast<volatile char *>(range)[0] = 1;
    hak_os_decommit(range, kChunk);
  }
  hak_os_release(range, kChunk);
}
BENCHMARK(BM_OsCommitTouchDecommit);

void BM_OsRemapGrow(benchmark::State &state) {
  for (auto _ : state) {
    void *p = nullptr, *q = nullptr;
    hak_os_map(kChunk, 0, &p);
    hak_os_remap(p, kChunk, 2 * kChunk, 1, &q);
    hak_os_release(q, 2 * kChunk);
  }
}
BENCHMARK(BM_OsRemapGrow);

}  // namespace

BENCHMARK_MAIN();
