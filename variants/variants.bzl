"""The one table of hakmem's build variants and the macros that expand per variant.

Every allocator library and every test is expanded into one target per variant
(`<name>_release`, `<name>_debug`, `<name>_trace`, plus the flag ablations where asked),
so a plain `bazel test //...` covers them all. The plain `<name>` follows
`--config=release|debug|trace` (and `--define FLAG=0|1` per flag) through config_settings.
allocator/internal/config.h is the only C code that reads the flags these produce.
"""

FLAGS = ["HEADER_CLASSIDX", "POOL_TLS_PHASE1", "PREWARM", "BUILD_RELEASE", "HAKMEM_TRACE", "HARDENING"]

_RELEASE = {"HEADER_CLASSIDX": 1, "POOL_TLS_PHASE1": 1, "PREWARM": 1, "BUILD_RELEASE": 1, "HAKMEM_TRACE": 0, "HARDENING": 1}

def _with(base, **changes):
    flags = dict(base)
    flags.update(changes)
    return flags

# name -> (flag values, optimisation flags). The first three are the product variants;
# the rest are single-flag ablations of release that the system tests also run.
VARIANTS = {
    "release": (_RELEASE, ["-O2"]),
    "debug": (_with(_RELEASE, BUILD_RELEASE = 0), ["-O1", "-g"]),
    "trace": (_with(_RELEASE, HAKMEM_TRACE = 1), ["-O2"]),
    "noheader": (_with(_RELEASE, HEADER_CLASSIDX = 0), ["-O2"]),
    "notls": (_with(_RELEASE, POOL_TLS_PHASE1 = 0), ["-O2"]),
    "noprewarm": (_with(_RELEASE, PREWARM = 0), ["-O2"]),
    # Release with the hardening's fast-path checks compiled out: what they cost
    # (compare --hardening) and the last percent for those who want it.
    "noharden": (_with(_RELEASE, HARDENING = 0), ["-O2"]),
}

PRODUCT_VARIANTS = ["release", "debug", "trace"]
ABLATIONS = ["noheader", "notls", "noprewarm", "noharden"]

# Flags for hakmem's own C and C++ code (never for third-party code).
COMMON_COPTS = [
    "-Wall",
    "-Wextra",
    "-Werror",
    "-fvisibility=hidden",
]

# The allocator must never have its own malloc calls rewritten into calls of itself.
ALLOCATOR_COPTS = COMMON_COPTS + [
    "-std=gnu11",
    "-fno-builtin-malloc",
    "-fno-builtin-calloc",
    "-fno-builtin-realloc",
    "-fno-builtin-free",
    "-ftls-model=initial-exec",
    "-fno-plt",
]

def variant_copts(variant):
    """The -D flags and optimisation flags of one variant, from the table."""
    flags, opt = VARIANTS[variant]
    return ["-D%s=%d" % (f, flags[f]) for f in FLAGS] + opt

def plain_copts():
    """Flags of the plain targets: the variant picked by --config, overridable per flag."""
    copts = select({
        "//variants:debug": ["-DHAKMEM_DEFAULT_%s=%d" % (f, VARIANTS["debug"][0][f]) for f in FLAGS] + VARIANTS["debug"][1],
        "//variants:trace": ["-DHAKMEM_DEFAULT_%s=%d" % (f, VARIANTS["trace"][0][f]) for f in FLAGS] + VARIANTS["trace"][1],
        "//conditions:default": ["-DHAKMEM_DEFAULT_%s=%d" % (f, VARIANTS["release"][0][f]) for f in FLAGS] + VARIANTS["release"][1],
    })
    for f in FLAGS:
        copts += select({
            "//variants:%s_0" % f: ["-D%s=0" % f],
            "//variants:%s_1" % f: ["-D%s=1" % f],
            "//conditions:default": [],
        })
    return copts

def _suffixed(labels, variant):
    return [label + "_" + variant for label in labels]

def hak_cc_library(name, deps = [], external_deps = [], variants = None, **kwargs):
    """One cc_library per variant (`<name>_<variant>`) plus the plain `<name>`.

    `deps` are other hak_cc_library targets (their matching variant is used);
    `external_deps` are ordinary labels.
    """
    copts = kwargs.pop("copts", [])

    # Static only: the shared object is libhakmem.so, whose name would clash otherwise.
    kwargs.setdefault("linkstatic", 1)
    for v in (variants or VARIANTS.keys()):
        native.cc_library(
            name = name + "_" + v,
            deps = _suffixed(deps, v) + external_deps,
            copts = ALLOCATOR_COPTS + variant_copts(v) + copts,
            **kwargs
        )
    native.cc_library(
        name = name,
        deps = deps + external_deps,
        copts = ALLOCATOR_COPTS + plain_copts() + copts,
        **kwargs
    )

def hak_cc_test(
        name,
        deps = [],
        external_deps = [],
        system = False,
        ablations = False,
        variants = None,
        **kwargs):
    """One cc_test per variant plus a test_suite `<name>` that holds them.

    `system = True` swaps the test process's allocator for that variant's hakmem
    (`cc_test(malloc = ...)`), so GoogleTest and the test itself run on it.
    `ablations = True` adds the single-flag ablation variants.
    """
    copts = kwargs.pop("copts", [])
    tags = kwargs.pop("tags", [])
    chosen = variants or (PRODUCT_VARIANTS + (ABLATIONS if ablations else []))
    tests = []
    for v in chosen:
        extra = {}
        test_tags = tags + ["variant_" + v]
        test_copts = []
        if system:
            extra["malloc"] = "//allocator:hakmem_" + v
            test_tags = test_tags + ["replaces_malloc"]

            # Every call the test makes must reach the allocator, not be folded away.
            test_copts = ["-fno-builtin-malloc", "-fno-builtin-free", "-fno-builtin-calloc", "-fno-builtin-realloc"]
        native.cc_test(
            name = name + "_" + v,
            deps = _suffixed(deps, v) + external_deps,
            copts = COMMON_COPTS + variant_copts(v) + ["-DHAK_TEST_EXPECT_" + v.upper()] + test_copts + copts,
            tags = test_tags,
            **dict(kwargs, **extra)
        )
        tests.append(":" + name + "_" + v)
    native.test_suite(name = name, tests = tests, tags = tags)

def hak_sh_test(name, srcs, data_per_variant = [], args_per_variant = [], ablations = False, **kwargs):
    """One sh_test per variant; `{v}` in data and args is replaced by the variant name."""
    tags = kwargs.pop("tags", [])
    data = kwargs.pop("data", [])
    args = kwargs.pop("args", [])
    tests = []
    for v in PRODUCT_VARIANTS + (ABLATIONS if ablations else []):
        native.sh_test(
            name = name + "_" + v,
            srcs = srcs,
            data = data + [d.format(v = v) for d in data_per_variant],
            args = [a.format(v = v) for a in args_per_variant] + args,
            tags = tags + ["variant_" + v],
            **kwargs
        )
        tests.append(":" + name + "_" + v)
    native.test_suite(name = name, tests = tests, tags = tags)
