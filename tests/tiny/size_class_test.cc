// The Tiny size-class table: every size 0..1024 maps to a class that holds it, with the
// promised waste bound and alignment, and the slab geometry holds every class.
#include <stddef.h>

#include "allocator/tiny/tiny.h"
#include "gtest/gtest.h"

namespace {

TEST(TinySizeClassTest, EverySizeFitsItsClassWithBoundedWaste) {
  for (size_t n = 0; n <= HAK_TINY_MAX; n++) {
    unsigned cls = hak_tiny_class_of(n);
    ASSERT_LT(cls, unsigned{HAK_TINY_CLASSES}) << n;
    // The fast path finds the class's cache from the table's byte (8 times the class).
    hak_tiny_cache_t caches[HAK_TINY_CLASSES];
    ASSERT_EQ(hak_cache_at8(caches, hak_tiny_class8_of(n)), &caches[cls]) << n;
    size_t size = hak_tiny_class_size[cls];
    EXPECT_GE(size, n) << n;
    // 16-byte granularity at the bottom, at most 25% waste above it (malloc(0) gets
    // the smallest block).
    size_t waste = size - (n ? n : 1);
    EXPECT_TRUE(waste <= 15 || waste * 4 <= size) << "size " << n << " in class " << size;
    // The smallest class that fits: no class in between would have done.
    if (cls > 0) {
      EXPECT_LT(hak_tiny_class_size[cls - 1], n == 0 ? 1 : n) << n;
    }
  }
}

TEST(TinySizeClassTest, ClassesAreSixteenByteMultiplesAndIncreasing) {
  for (unsigned c = 0; c < HAK_TINY_CLASSES; c++) {
    EXPECT_EQ(hak_tiny_class_size[c] % 16, 0) << c;
    if (c) {
      EXPECT_GT(hak_tiny_class_size[c], hak_tiny_class_size[c - 1]);
    }
  }
  EXPECT_EQ(hak_tiny_class_size[HAK_TINY_CLASSES - 1], HAK_TINY_MAX);
}

// Carving uses one stride, the class size: with the header at the largest colour the
// last block of a slab still ends inside it, and every block start is 128-byte aligned.
TEST(TinySizeClassTest, CarvingStaysInsideTheSlab) {
  size_t worst_start = HAK_TINY_COLOURS * HAK_TINY_SLAB_HEADER;
  for (unsigned c = 0; c < HAK_TINY_CLASSES; c++) {
    size_t stride = hak_tiny_class_size[c];
    size_t capacity = (HAK_TINY_SLAB_SIZE - worst_start) / stride;
    EXPECT_GE(capacity, 60u) << c;
    EXPECT_LE(worst_start + capacity * stride, HAK_TINY_SLAB_SIZE) << c;
  }
  EXPECT_EQ(HAK_TINY_SLAB_HEADER % 128, 0);
}

// Headers of slabs spread over every colour, and each lies in its own slab.
TEST(TinySizeClassTest, SlabHeadersAreColouredWithinTheirSlab) {
  int seen[HAK_TINY_COLOURS] = {0};
  for (uintptr_t slab = 0; slab < 4096; slab++) {
    uintptr_t base = (uintptr_t{1} << 40) + (slab << HAK_TINY_SLAB_SHIFT);
    uintptr_t header =
        reinterpret_cast<uintptr_t>(hak_tiny_slab_of(reinterpret_cast<void *>(base + 5000)));
    ASSERT_GE(header, base);
    ASSERT_LT(header + HAK_TINY_SLAB_HEADER, base + HAK_TINY_COLOURS * HAK_TINY_SLAB_HEADER + 1);
    ASSERT_EQ((header - base) % HAK_TINY_SLAB_HEADER, 0u);
    seen[(header - base) / HAK_TINY_SLAB_HEADER]++;
  }
  for (int c = 0; c < HAK_TINY_COLOURS; c++) EXPECT_GT(seen[c], 4096 / HAK_TINY_COLOURS / 2) << c;
  EXPECT_EQ(HAK_TINY_SS_SIZE % HAK_TINY_SLAB_SIZE, 0u);
  EXPECT_LE(HAK_TINY_CLASSES, HAK_TINY_CLASS_SLOTS);
}

}  // namespace
