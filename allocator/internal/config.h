/* The only reader of hakmem's compile-time flags (variants/variants.bzl has the table). Maps
 * HEADER_CLASSIDX, POOL_TLS_PHASE1, PREWARM, BUILD_RELEASE, HAKMEM_TRACE and HARDENING to 0/1
 * constants,
 * rejects unknown values and conflicting combinations. With no flags at all the build is release;
 * nothing is inferred from NDEBUG. */
#ifndef HAK_ALLOCATOR_INTERNAL_CONFIG_H
#define HAK_ALLOCATOR_INTERNAL_CONFIG_H

/* A flag given explicitly wins; otherwise the variant's default (plain targets get
 * HAKMEM_DEFAULT_<FLAG> from --config); otherwise release. */
#ifndef HEADER_CLASSIDX
#ifdef HAKMEM_DEFAULT_HEADER_CLASSIDX
#define HEADER_CLASSIDX HAKMEM_DEFAULT_HEADER_CLASSIDX
#else
#define HEADER_CLASSIDX 1
#endif
#endif

#ifndef POOL_TLS_PHASE1
#ifdef HAKMEM_DEFAULT_POOL_TLS_PHASE1
#define POOL_TLS_PHASE1 HAKMEM_DEFAULT_POOL_TLS_PHASE1
#else
#define POOL_TLS_PHASE1 1
#endif
#endif

#ifndef PREWARM
#ifdef HAKMEM_DEFAULT_PREWARM
#define PREWARM HAKMEM_DEFAULT_PREWARM
#else
#define PREWARM 1
#endif
#endif

#ifndef BUILD_RELEASE
#ifdef HAKMEM_DEFAULT_BUILD_RELEASE
#define BUILD_RELEASE HAKMEM_DEFAULT_BUILD_RELEASE
#else
#define BUILD_RELEASE 1
#endif
#endif

#ifndef HAKMEM_TRACE
#ifdef HAKMEM_DEFAULT_HAKMEM_TRACE
#define HAKMEM_TRACE HAKMEM_DEFAULT_HAKMEM_TRACE
#else
#define HAKMEM_TRACE 0
#endif
#endif

/* HARDENING=0 compiles the hardening's checks out (internal/link.h): links stored plain,
 * no link check anywhere, no cache-head or alignment test on the fast frees; the build
 * otherwise behaves as HAKMEM_HARDEN=0. */
#ifndef HARDENING
#ifdef HAKMEM_DEFAULT_HARDENING
#define HARDENING HAKMEM_DEFAULT_HARDENING
#else
#define HARDENING 1
#endif
#endif

#if HEADER_CLASSIDX != 0 && HEADER_CLASSIDX != 1
#error "HEADER_CLASSIDX must be 0 or 1"
#endif
#if POOL_TLS_PHASE1 != 0 && POOL_TLS_PHASE1 != 1
#error "POOL_TLS_PHASE1 must be 0 or 1"
#endif
#if PREWARM != 0 && PREWARM != 1
#error "PREWARM must be 0 or 1"
#endif
#if BUILD_RELEASE != 0 && BUILD_RELEASE != 1
#error "BUILD_RELEASE must be 0 or 1"
#endif
#if HAKMEM_TRACE != 0 && HAKMEM_TRACE != 1
#error "HAKMEM_TRACE must be 0 or 1"
#endif
#if HARDENING != 0 && HARDENING != 1
#error "HARDENING must be 0 or 1"
#endif
/* Tracing measures the route release builds take; checks would change that route. */
#if HAKMEM_TRACE && !BUILD_RELEASE
#error "HAKMEM_TRACE=1 is release plus tracing: it needs BUILD_RELEASE=1"
#endif

/* Constants for plain `if`, so release builds still type-check the debug paths. The Bazel
 * flags keep their names (they are the product's interface); these say what they do. */
enum {
  HAK_CLASS_FROM_ADDRESS = HEADER_CLASSIDX,
  HAK_POOL_THREAD_CACHE = POOL_TLS_PHASE1,
  HAK_PREWARM = PREWARM,
  HAK_RELEASE = BUILD_RELEASE,
  HAK_CHECKS = !BUILD_RELEASE,
  HAK_TRACE = HAKMEM_TRACE,
  HAK_HARDENING = HARDENING,
};

#define HAK_STR2(x) #x
#define HAK_STR(x) HAK_STR2(x)

#if !BUILD_RELEASE
#define HAK_VARIANT_NAME "debug-fail-fast"
#elif HAKMEM_TRACE
#define HAK_VARIANT_NAME "trace"
#else
#define HAK_VARIANT_NAME "release"
#endif

#define HAK_VARIANT_FLAGS \
  "HEADER_CLASSIDX=" HAK_STR(HEADER_CLASSIDX) " POOL_TLS_PHASE1=" HAK_STR( \
      POOL_TLS_PHASE1) " PREWARM=" HAK_STR(PREWARM) " BUILD_RELEASE=" HAK_STR(BUILD_RELEASE) \
      " HARDENING=" HAK_STR(HARDENING)

#ifdef __cplusplus
#define HAK_STATIC_ASSERT static_assert
#else
#define HAK_STATIC_ASSERT _Static_assert
#endif

/* AddressSanitizer builds (--config=asan, --config=fuzz; os_boundary/asan.h says what
 * hakmem does there). HAK_NO_ASAN: a function ASan does not instrument, never inlined
 * (GCC instruments an inlined body as its caller's). */
#if defined(__SANITIZE_ADDRESS__)
#define HAK_ASAN_BUILD 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define HAK_ASAN_BUILD 1
#endif
#endif
#ifdef HAK_ASAN_BUILD
enum { HAK_ASAN = 1 };
#define HAK_NO_ASAN __attribute__((noinline, no_sanitize_address))
#else
#define HAK_ASAN_BUILD 0
enum { HAK_ASAN = 0 };
#define HAK_NO_ASAN
#endif

/* ThreadSanitizer builds (--config=tsan): the idle flush, whose ordering comes from the
 * kernel (heap/heap.h), is off there. */
#if defined(__SANITIZE_THREAD__)
enum { HAK_TSAN = 1 };
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
enum { HAK_TSAN = 1 };
#else
enum { HAK_TSAN = 0 };
#endif
#else
enum { HAK_TSAN = 0 };
#endif

#define HAK_LIKELY(x) __builtin_expect(!!(x), 1)
#define HAK_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define HAK_INLINE static inline __attribute__((always_inline))
#define HAK_COLD __attribute__((cold, noinline))
#define HAK_TLS __thread __attribute__((tls_model("initial-exec")))
/* On the declarations of hakmem's globals: -fvisibility=hidden makes the definitions
 * hidden, but code seeing only an `extern` must assume the symbol may live in another
 * shared object and load its address from the GOT first. Declared hidden, a fast path
 * reads it with one RIP-relative instruction. */
#define HAK_HIDDEN __attribute__((visibility("hidden")))

#endif /* HAK_ALLOCATOR_INTERNAL_CONFIG_H */
