// The Pool tier on its own: class table, arena growth from the options (bad values fall
// back to the defaults with a warning), and the page registry for every page an arena
// holds.
#include <stdio.h>

#include <string>
#include <vector>

#include "allocator/front/front.h"
#include "allocator/hakmem.h"
#include "allocator/internal/options.h"
#include "allocator/pool/pool.h"
#include "gtest/gtest.h"

namespace {

TEST(PoolTest, EverySizeFitsItsClassWithAtMostAQuarterWasted) {
  for (size_t n = HAK_POOL_MIN + 1; n <= HAK_POOL_MAX; n++) {
    unsigned cls = hak_pool_class_of(n);
    ASSERT_LT(cls, unsigned{HAK_POOL_CLASSES}) << n;
    size_t size = hak_pool_class_size[cls];
    ASSERT_GE(size, n) << n;
    ASSERT_LE((size - n) * 4, size) << n;
    if (cls) {
      ASSERT_LT(hak_pool_class_size[cls - 1], n) << n;
    }
  }
  for (unsigned c = 0; c < HAK_POOL_CLASSES; c++) EXPECT_EQ(hak_pool_class_size[c] % 256, 0u);
}

std::vector<size_t> Steps() {
  size_t steps[32];
  unsigned n = hak_pool_arena_steps(steps, 32);
  return std::vector<size_t>(steps, steps + n);
}

std::string LoadWithEnv(const char *init, const char *max, const char *levels) {
  static const char *values[3];
  values[0] = init;
  values[1] = max;
  values[2] = levels;
  FILE *f = tmpfile();
  hak_options_load(
      [](const char *name) -> const char * {
        std::string s(name);
        if (s == "HAKMEM_POOL_TLS_ARENA_MB_INIT") return values[0];
        if (s == "HAKMEM_POOL_TLS_ARENA_MB_MAX") return values[1];
        if (s == "HAKMEM_POOL_TLS_ARENA_GROWTH_LEVELS") return values[2];
        return nullptr;
      },
      fileno(f));
  std::string text(1024, '\0');
  rewind(f);
  text.resize(fread(&text[0], 1, text.size(), f));
  fclose(f);
  return text;
}

constexpr size_t kMiB = size_t{1} << 20;

TEST(PoolTest, ArenaChunksGrowAsTheOptionsSay) {
  LoadWithEnv(nullptr, nullptr, nullptr);
  EXPECT_EQ(Steps(), (std::vector<size_t>{1 * kMiB, 2 * kMiB, 4 * kMiB, 8 * kMiB}));
  LoadWithEnv("2", "64", "2");
  EXPECT_EQ(Steps(), (std::vector<size_t>{2 * kMiB, 4 * kMiB, 8 * kMiB}));
  LoadWithEnv("4", "4", "3");
  EXPECT_EQ(Steps(), (std::vector<size_t>{4 * kMiB}));
  LoadWithEnv("1", "8", "0");
  EXPECT_EQ(Steps(), (std::vector<size_t>{1 * kMiB}));
}

TEST(PoolTest, BadArenaOptionsKeepTheDefaultsWithOneWarningEach) {
  std::string warnings = LoadWithEnv("zero", "100000", "-3");
  EXPECT_NE(warnings.find("HAKMEM_POOL_TLS_ARENA_MB_INIT=zero"), std::string::npos) << warnings;
  EXPECT_NE(warnings.find("HAKMEM_POOL_TLS_ARENA_MB_MAX=100000"), std::string::npos) << warnings;
  EXPECT_NE(warnings.find("HAKMEM_POOL_TLS_ARENA_GROWTH_LEVELS=-3"), std::string::npos) << warnings;
  EXPECT_EQ(Steps(), (std::vector<size_t>{1 * kMiB, 2 * kMiB, 4 * kMiB, 8 * kMiB}));
  LoadWithEnv(nullptr, nullptr, nullptr);
}

// Every page that a block of any class covers answers with that class in the registry;
// pages past the arenas answer "no span".
TEST(PoolTest, RegistryAnswersForEveryPageOfTheArena) {
  std::vector<void *> blocks;
  hak_free(hak_malloc(2000));  // initialises hakmem
  uintptr_t pool_base = hak_front.base + hak_tiny_geom.size;
  ASSERT_GT(hak_front.total, hak_tiny_geom.size);
  size_t pages = 0;
  for (unsigned c = 0; c < HAK_POOL_CLASSES; c++) {
    for (int i = 0; i < 40; i++) {
      void *p = hak_malloc(hak_pool_class_size[c]);
      ASSERT_NE(p, nullptr);
      EXPECT_EQ(hak_malloc_usable_size(p), hak_pool_class_size[c]);
      uintptr_t off = reinterpret_cast<uintptr_t>(p) - pool_base;
      ASSERT_LT(off, hak_front.total - hak_tiny_geom.size) << "a Pool block";
      for (uintptr_t page = off & ~(HAK_POOL_PAGE_SIZE - 1); page < off + hak_pool_class_size[c];
           page += HAK_POOL_PAGE_SIZE) {
        ASSERT_EQ(hak_pool_registry_class(page), static_cast<int>(c)) << "page " << page;
        pages++;
      }
      blocks.push_back(p);
    }
  }
  EXPECT_GT(pages, 900u);
  EXPECT_EQ(hak_pool_registry_class(hak_front.total - hak_tiny_geom.size - 1), -1);
  for (void *p : blocks) hak_free(p);
}

}  // namespace
