"""Helpers of tests/BUILD.bazel."""

load("//variants:variants.bzl", "hak_cc_test")

# What a whole-allocator test links: the hak_* API and the internals it inspects.
SYSTEM_DEPS = [
    "//allocator:hakmem_api",
    "//allocator:internal",
    "//allocator:os_boundary",
]

def hak_system_test(name, src, **kwargs):
    """A whole-allocator GoogleTest test of one source under tests/system/, run with
    hakmem as the process's malloc in every variant (hak_cc_test with system = True)."""
    hak_cc_test(
        name = name,
        srcs = [src, "system/test_util.h"],
        external_deps = ["@com_google_googletest//:gtest_main"],
        system = True,
        deps = SYSTEM_DEPS,
        **kwargs
    )
