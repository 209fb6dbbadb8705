"""The comparison tool's arithmetic and parsing: medians of ratios within a round (so a
machine that slows down for a whole round does not move them, and rounds one allocator
missed are left out), and the real programs' pieces: redis-benchmark's CSV, the rate
over all commands, which process HAKMEM_STATS says was served, and the rule that every
allocator's output must be the system allocator's."""

import unittest

from benchmarks import compare
from benchmarks import programs


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


STATS = """hakmem stats of pid 10 bash (release, HEADER_CLASSIDX=1)
  tiny refills 12
  pool refills 3
hakmem stats of pid 11 redis-server (release, HEADER_CLASSIDX=1)
  tiny refills 0
  pool refills 0
hakmem stats of pid 12 sqlite3 (release, HEADER_CLASSIDX=1)
  tiny refills 0
  pool refills 7
"""


class RealProgramTest(unittest.TestCase):
    def test_redis_csv_gives_requests_per_second_per_command(self):
        text = ('"test","rps","avg_latency_ms"\n"SET","512820.50","1.425"\n'
                '"GET","769230.75","0.918"\n"LPUSH (needed to benchmark LPOP)","1000.0","1"\n')
        self.assertEqual(programs.parse_redis_csv(text),
                         {"SET": 512820.5, "GET": 769230.75, "LPUSH": 1000.0})
        self.assertEqual(programs.parse_redis_csv("garbage\n"), {})

    def test_the_rate_over_all_commands_is_requests_over_their_total_time(self):
        # 1000 requests at 1000/s and at 4000/s: 2000 requests in 1.25 s.
        self.assertAlmostEqual(programs.aggregate_rate({"A": 1000.0, "B": 4000.0}, 1000), 1600.0)
        self.assertIsNone(programs.aggregate_rate({}, 1000))

    def test_only_the_programs_own_block_counts(self):
        self.assertTrue(programs.served_by_hakmem(STATS, "sqlite3"))
        self.assertFalse(programs.served_by_hakmem(STATS, "redis-server"),
                         "the wrapping shell's refills do not count for the server")
        self.assertFalse(programs.served_by_hakmem(STATS, "python3"), "no block at all")

    def test_an_output_unlike_the_system_allocators_fails_the_run(self):
        results = {
            ("w", "system"): {"outputs": ["42\n", "42\n"], "rates": {0: 1.0}},
            ("w", "hakmem"): {"outputs": ["42\n", "43\n"], "rates": {0: 2.0, 1: 2.0}},
            ("w", "mimalloc"): {"outputs": ["42\n"], "rates": {0: 1.5}},
            ("w", "jemalloc"): {"outputs": [], "rates": {}, "error": "server did not start"},
        }
        failures = compare.check_outputs("w", ["hakmem", "system", "mimalloc", "jemalloc"],
                                         results)
        self.assertEqual(len(failures), 2)
        self.assertIn("hakmem: output differs", failures[0])
        self.assertIn("jemalloc: server did not start", failures[1])
        self.assertEqual(results[("w", "hakmem")]["rates"], {}, "no rate for a wrong answer")
        self.assertNotIn("error", results[("w", "mimalloc")])


if __name__ == "__main__":
    unittest.main()
