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
        srcs = [src, "system/proc_util.h", "system/test_util.h"],
        external_deps = ["@com_google_googletest//:gtest_main"],
        system = True,
        deps = SYSTEM_DEPS,
        **kwargs
    )

def hak_api_twin_test(name, srcs, **kwargs):
    """The twin of a whole-allocator test built against the hak_* API
    (tests/system/api_twin.h, -DHAK_TEST_API_TWIN) instead of replacing malloc, so that
    ThreadSanitizer and AddressSanitizer, which own malloc, run it too."""
    hak_cc_test(
        name = name,
        srcs = srcs + ["system/api_twin.h", "system/test_util.h"],
        copts = ["-DHAK_TEST_API_TWIN"] + kwargs.pop("copts", []),
        external_deps = ["@com_google_googletest//:gtest_main"] + kwargs.pop("external_deps", []),
        deps = SYSTEM_DEPS,
        **kwargs
    )
