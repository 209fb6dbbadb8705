// The decay's clock: what is due when. A pass reads the clock once and may free memory
// while it runs, which is dated after that reading: such memory must wait for its own
// decay (the unsigned difference once wrapped round and sent it back at once).
#include "allocator/internal/clock.h"

#include "allocator/internal/options.h"
#include "gtest/gtest.h"

namespace {

class DecayClockTest : public ::testing::Test {
 protected:
  void SetUp() override { hak_option_values[HAK_OPT_DECAY_MS] = 1000; }
};

TEST_F(DecayClockTest, MemoryIsDueOnceIdleForTheDecay) {
  EXPECT_FALSE(hak_decay_due(5000, 5999, 0));
  EXPECT_TRUE(hak_decay_due(5000, 6000, 0));
  EXPECT_TRUE(hak_decay_due(5000, 90000, 0));
}

TEST_F(DecayClockTest, MemoryFreedAfterThePassReadTheClockIsNotDue) {
  EXPECT_FALSE(hak_decay_due(6001, 6000, 0));
  EXPECT_FALSE(hak_decay_due(UINT64_MAX, 6000, 0));
}

TEST_F(DecayClockTest, ForceMakesEverythingDue) {
  EXPECT_TRUE(hak_decay_due(6001, 6000, 1));
  EXPECT_TRUE(hak_decay_due(6000, 6000, 1));
}

TEST_F(DecayClockTest, PassesComeAnEighthOfTheDecayApartAndAtLeastAMillisecond) {
  EXPECT_EQ(hak_decay_step_ms(), 125u);
  hak_option_values[HAK_OPT_DECAY_MS] = 4;
  EXPECT_EQ(hak_decay_step_ms(), 1u);
  hak_option_values[HAK_OPT_DECAY_MS] = 0;
  EXPECT_EQ(hak_decay_step_ms(), 1u);
  EXPECT_TRUE(hak_decay_due(6000, 6000, 0)) << "a decay of 0 returns memory at once";
}

}  // namespace
