// The one owner lookup (front/front.h): every pointer is classified from its address and
// hakmem's own tables, by the same range predicates the inline free uses.
#include <stdint.h>
#include <stdlib.h>

#include "allocator/front/front.h"
#include "allocator/hakmem.h"
#include "gtest/gtest.h"

namespace {

TEST(FrontOwnerTest, EachTierOwnsWhatItHandsOut) {
  void *tiny = hak_malloc(100), *pool = hak_malloc(5000), *large = hak_malloc(300000);
  ASSERT_NE(tiny, nullptr);
  ASSERT_NE(pool, nullptr);
  ASSERT_NE(large, nullptr);
  EXPECT_EQ(hak_owner_of(tiny).kind, HAK_OWNER_TINY);
  EXPECT_EQ(hak_owner_of(pool).kind, HAK_OWNER_POOL);
  EXPECT_EQ(hak_owner_of(large).kind, HAK_OWNER_LARGE);
  EXPECT_TRUE(hak_in_tiny(hak_owner_of(tiny).off));
  EXPECT_TRUE(hak_in_pool(reinterpret_cast<uintptr_t>(pool) - hak_tiny_geom.base));
  EXPECT_FALSE(hak_in_pool(reinterpret_cast<uintptr_t>(tiny) - hak_tiny_geom.base));
  hak_free(tiny);
  hak_free(pool);
  hak_free(large);
  EXPECT_EQ(hak_owner_of(large).kind, HAK_OWNER_FOREIGN) << "a freed Large block";
}

TEST(FrontOwnerTest, PointersOfNoTierAreForeign) {
  static char global[64];
  char local[64];
  void *libc = malloc(64);  // this test does not replace malloc: glibc's block
  EXPECT_EQ(hak_owner_of(global).kind, HAK_OWNER_FOREIGN);
  EXPECT_EQ(hak_owner_of(local).kind, HAK_OWNER_FOREIGN);
  EXPECT_EQ(hak_owner_of(libc).kind, HAK_OWNER_FOREIGN);
  EXPECT_EQ(hak_owner_of(nullptr).kind, HAK_OWNER_FOREIGN);
  free(libc);
  // Inside Tiny's region but in a SuperSlab no class has handed out.
  uintptr_t last_row = hak_tiny_geom.size - (uintptr_t{1} << HAK_TINY_ROW_SHIFT);
  EXPECT_EQ(hak_owner_of(reinterpret_cast<void *>(hak_tiny_geom.base + last_row + 64)).kind,
            HAK_OWNER_FOREIGN);
  // Inside Pool's region past what the arenas took.
  uintptr_t pool_end = hak_tiny_geom.base + hak_front.total - 4096;
  EXPECT_EQ(hak_owner_of(reinterpret_cast<void *>(pool_end)).kind, HAK_OWNER_FOREIGN);
}

}  // namespace
