// Runs the fuzz target without libFuzzer: files named on the command line are replayed
// (a crash input from a libFuzzer run, say); otherwise --iterations inputs of up to
// --max_len bytes are drawn from --seed. Exits 0 when every input passed (a failing one
// aborts inside the target, naming what broke).
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <random>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int main(int argc, char **argv) {
  unsigned long long iterations = 1000, max_len = 512, seed = 1;
  std::vector<const char *> files;
  for (int i = 1; i < argc; i++) {
    if (sscanf(argv[i], "--iterations=%llu", &iterations) == 1) continue;
    if (sscanf(argv[i], "--max_len=%llu", &max_len) == 1) continue;
    if (sscanf(argv[i], "--seed=%llu", &seed) == 1) continue;
    if (strncmp(argv[i], "--", 2) == 0) {
      fprintf(stderr, "usage: %s [--iterations=N] [--max_len=N] [--seed=N] [FILE ...]\n", argv[0]);
      return 2;
    }
    files.push_back(argv[i]);
  }
  for (const char *f : files) {
    FILE *in = fopen(f, "rb");
    if (!in) {
      perror(f);
      return 2;
    }
    std::vector<uint8_t> data;
    for (int c; (c = fgetc(in)) != EOF;) data.push_back(static_cast<uint8_t>(c));
    fclose(in);
    LLVMFuzzerTestOneInput(data.data(), data.size());
  }
  if (!files.empty()) return 0;
  std::mt19937_64 rng(seed);
  std::vector<uint8_t> data;
  unsigned long long bytes = 0;
  for (unsigned long long i = 0; i < iterations; i++) {
    data.resize(rng() % (max_len + 1));
    for (auto &b : data) b = static_cast<uint8_t>(rng());
    bytes += data.size();
    LLVMFuzzerTestOneInput(data.data(), data.size());
  }
  printf("fuzz: %llu inputs, %llu bytes, seed %llu: all passed\n", iterations, bytes, seed);
  return 0;
}
