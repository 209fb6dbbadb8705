"""The workload drivers, named once for the benchmarks package and the tests that run them."""

DRIVERS = [
    "larson",
    "random_mixed",
    "mid_large_mt",
    "pool_tls",
    "xthread",
    "xbatch",
    "cache_thrash",
    "realloc_grow",
    "pair_loop",
    "burst_idle",
    "large_replace",
]
