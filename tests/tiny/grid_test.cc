// The Tiny grid: class c's k-th SuperSlab sits in row k, column c, so the first
// SuperSlabs of every class lie in the first row (64 MiB), the class is the column, the
// owner table is indexed by slab number, and pointers into unused columns or rows are
// refused. Runs through the hak_* API (the process allocator stays glibc's) and reads
// the geometry from the Tiny header.
#include <errno.h>
#include <stdint.h>

#include <vector>

#include "allocator/hakmem.h"
#include "allocator/internal/config.h"
#include "allocator/tiny/tiny.h"
#include "gtest/gtest.h"

namespace {

uintptr_t OffsetOf(const void *p) { return reinterpret_cast<uintptr_t>(p) - hak_tiny_geom.base; }

TEST(TinyGridTest, FirstBlocksOfEveryClassShareTheFirstRow) {
  std::vector<void *> blocks;
  for (unsigned c = 0; c < HAK_TINY_CLASSES; c++) {
    void *p = hak_malloc(hak_tiny_class_size[c]);
    ASSERT_NE(p, nullptr);
    blocks.push_back(p);
    uintptr_t off = OffsetOf(p);
    ASSERT_LT(off, hak_tiny_geom.size) << "class " << c << " is not in the Tiny region";
    EXPECT_EQ(off >> HAK_TINY_ROW_SHIFT, 0u) << "class " << c;
    EXPECT_EQ(hak_tiny_slot_at(off), c);
    EXPECT_EQ(hak_tiny_class_at(off), c);  // the registry agrees when HEADER_CLASSIDX=0
    EXPECT_TRUE(hak_tiny_owns(off));
    // The owner table holds the owner's cache of the class: where the fast free pushes.
    EXPECT_EQ(*hak_tiny_owner_of(off), &hak_tiny_tls->cache[c]) << "class " << c;
  }
  for (void *p : blocks) hak_free(p);
}

// More than a SuperSlab of one class continues in the next row of the same column.
TEST(TinyGridTest, AClassGrowsDownItsColumn) {
  const unsigned cls = HAK_TINY_CLASSES - 1;
  const size_t size = hak_tiny_class_size[cls];
  std::vector<void *> blocks;
  uintptr_t max_row = 0;
  for (size_t i = 0; i < 3 * HAK_TINY_SS_SIZE / size; i++) {
    void *p = hak_malloc(size);
    ASSERT_NE(p, nullptr);
    blocks.push_back(p);
    uintptr_t off = OffsetOf(p);
    ASSERT_LT(off, hak_tiny_geom.size);
    ASSERT_EQ(hak_tiny_slot_at(off), cls) << i;
    uintptr_t row = off >> HAK_TINY_ROW_SHIFT;
    uintptr_t cell = (row * HAK_TINY_CLASS_SLOTS + cls) << HAK_TINY_SS_SHIFT;
    ASSERT_GE(off, cell);
    ASSERT_LT(off + size, cell + HAK_TINY_SS_SIZE + 1);
    if (row > max_row) max_row = row;
  }
  EXPECT_GE(max_row, 2u);
  EXPECT_GE(__atomic_load_n(&hak_tiny_geom.rows[cls], __ATOMIC_ACQUIRE), max_row + 1);
  for (void *p : blocks) hak_free(p);
}

TEST(TinyGridTest, UnusedColumnsAndRowsAreNotOwned) {
  void *p = hak_malloc(16);  // make sure the region exists
  ASSERT_NE(p, nullptr);
  uintptr_t unused_column = uintptr_t{HAK_TINY_CLASS_SLOTS - 1} << HAK_TINY_SS_SHIFT;
  EXPECT_FALSE(hak_tiny_owns(unused_column + 4096));
  uintptr_t last_row = hak_tiny_geom.size - (uintptr_t{1} << HAK_TINY_ROW_SHIFT);
  EXPECT_FALSE(hak_tiny_owns(last_row + 4096));  // class 0 never got that far
  if (HAK_RELEASE) {
    hak_stats_t before, after;
    hak_stats_get(&before);
    hak_free(reinterpret_cast<void *>(hak_tiny_geom.base + unused_column + 4096));
    hak_free(reinterpret_cast<void *>(hak_tiny_geom.base + last_row + 4096));
    hak_stats_get(&after);
    EXPECT_EQ(after.foreign_frees - before.foreign_frees, 2u);
  }
  hak_free(p);
}

// A geometry the grid cannot describe is refused before anything changes.
TEST(TinyGridTest, InitRefusesBadGeometryAndKeepsTheRegion) {
  void *p = hak_malloc(32);
  ASSERT_NE(p, nullptr);
  const hak_tiny_geom_t saved = hak_tiny_geom;
  const uintptr_t row = uintptr_t{1} << HAK_TINY_ROW_SHIFT;
  EXPECT_EQ(hak_tiny_init(saved.base, row), EINVAL);             // one row
  EXPECT_EQ(hak_tiny_init(saved.base, 3 * row), EINVAL);         // not a power of two
  EXPECT_EQ(hak_tiny_init(saved.base, 4096 * row), EINVAL);      // more rows than allowed
  EXPECT_EQ(hak_tiny_init(saved.base + 4096, 2 * row), EINVAL);  // unaligned base
  EXPECT_EQ(hak_tiny_geom.base, saved.base);
  EXPECT_EQ(hak_tiny_geom.size, saved.size);
  EXPECT_EQ(hak_tiny_geom.owners, saved.owners);
  EXPECT_EQ(*hak_tiny_owner_of(OffsetOf(p)), &hak_tiny_tls->cache[hak_tiny_class_of(32)]);
  hak_free(p);
}

}  // namespace
