"""The comparison tool's ratios: medians of ratios within a round, so that a machine
that slows down for a whole round does not move them, and rounds one allocator missed
are left out."""

import unittest

from benchmarks import compare


class PairedRatioTest(unittest.TestCase):
    def test_a_slow_round_does_not_move_the_ratio(self):
        # Rounds 0 and 2 on a fast machine, round 1 on one three times slower: hakmem is
        # 1.25x the peer in every round.
        hakmem = {0: 125.0, 1: 125.0 / 3, 2: 125.0}
        peer = {0: 100.0, 1: 100.0 / 3, 2: 100.0}
        self.assertAlmostEqual(compare.paired_ratio(hakmem, peer), 1.25)

    def test_medians_of_all_runs_would_mix_machines(self):
        # The case the paired ratio exists for: the peer's fast runs fell in other rounds.
        hakmem = {0: 40.0, 1: 50.0, 2: 125.0}
        peer = {0: 32.0, 1: 100.0, 2: 100.0}
        self.assertAlmostEqual(compare.paired_ratio(hakmem, peer), 1.25)

    def test_rounds_missing_on_either_side_are_skipped(self):
        self.assertAlmostEqual(compare.paired_ratio({0: 10.0, 1: 30.0}, {1: 10.0, 2: 5.0}), 3.0)
        self.assertIsNone(compare.paired_ratio({0: 10.0}, {1: 10.0}))
        self.assertIsNone(compare.paired_ratio({0: 10.0}, {0: 0.0}))


if __name__ == "__main__":
    unittest.main()
