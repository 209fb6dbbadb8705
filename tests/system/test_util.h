// Helpers shared by the whole-allocator tests: stamped data and counter snapshots.
#ifndef HAK_TESTS_SYSTEM_TEST_UTIL_H
#define HAK_TESTS_SYSTEM_TEST_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "allocator/hakmem.h"

namespace hak_test {

// Writes a pattern derived from `seed` over n bytes; StampIntact checks it.
inline void Stamp(void *p, size_t n, uint64_t seed) {
  auto *b = static_cast<unsigned char *>(p);
  for (size_t i = 0; i < n; i++) b[i] = static_cast<unsigned char>(seed * 131 + i * 31);
}

inline bool StampIntact(const void *p, size_t n, uint64_t seed) {
  auto *b = static_cast<const unsigned char *>(p);
  for (size_t i = 0; i < n; i++) {
    if (b[i] != static_cast<unsigned char>(seed * 131 + i * 31)) return false;
  }
  return true;
}

inline hak_stats_t Stats() {
  hak_stats_t s;
  hak_stats_get(&s);
  return s;
}

// Hides a value from the compiler, which rejects impossible requests made on purpose.
inline size_t Opaque(size_t v) {
  volatile size_t hidden = v;
  return hidden;
}

}  // namespace hak_test

#endif  // HAK_TESTS_SYSTEM_TEST_UTIL_H
