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

// Carving uses one stride, the class size: the last block of a slab ends inside it and
// every block start is 16-byte aligned.
TEST(TinySizeClassTest, CarvingStaysInsideTheSlab) {
  for (unsigned c = 0; c < HAK_TINY_CLASSES; c++) {
    size_t stride = hak_tiny_class_size[c];
    size_t capacity = (HAK_TINY_SLAB_SIZE - HAK_TINY_SLAB_HEADER) / stride;
    EXPECT_GE(capacity, 60u) << c;
    EXPECT_LE(HAK_TINY_SLAB_HEADER + capacity * stride, HAK_TINY_SLAB_SIZE) << c;
    EXPECT_EQ(HAK_TINY_SLAB_HEADER % 16, 0);
  }
  EXPECT_EQ(HAK_TINY_SS_SIZE % HAK_TINY_SLAB_SIZE, 0u);
  EXPECT_LE(HAK_TINY_CLASSES, HAK_TINY_CLASS_SLOTS);
}

}  // namespace
