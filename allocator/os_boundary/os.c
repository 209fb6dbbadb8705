/* Linux implementation of the OS contract in os.h, with per-kind counters and the
 * fault-injection hook. This is the only file that includes <sys/mman.h> for calls. */
#define _GNU_SOURCE
#include "allocator/os_boundary/os.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/membarrier.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "allocator/internal/fork.h"
#include "allocator/os_boundary/asan.h"
#include "allocator/os_boundary/os_testing.h"

static uint64_t os_calls[HAK_OS_KIND_COUNT];
static uint64_t os_bytes[HAK_OS_KIND_COUNT];
static uint64_t os_failures[HAK_OS_KIND_COUNT];
static uint64_t os_fail_countdown[HAK_OS_KIND_COUNT];
static int os_fail_every[HAK_OS_KIND_COUNT];
static uint32_t os_fail_ppm[HAK_OS_KIND_COUNT]; /* random failures per million calls */
static HAK_TLS uint64_t fault_rng;              /* this thread's draws (xorshift) */
static size_t os_page_size;

static const char *const os_kind_names[HAK_OS_KIND_COUNT] = {
    "reserve", "map", "commit", "decommit", "release", "remap", "protect",
};

const char *hak_os_kind_name(hak_os_kind_t kind) { return os_kind_names[kind]; }

size_t hak_os_page_size(void) {
  size_t ps = __atomic_load_n(&os_page_size, __ATOMIC_RELAXED);
  if (ps == 0) {
    long v = sysconf(_SC_PAGESIZE);
    ps = v > 0 ? (size_t)v : 4096;
    __atomic_store_n(&os_page_size, ps, __ATOMIC_RELAXED);
  }
  return ps;
}

/* Whether a random injected failure hits this call (HAKMEM_FAULT_RATE, tests). */
static int fault_drawn(hak_os_kind_t kind) {
  uint32_t ppm = __atomic_load_n(&os_fail_ppm[kind], __ATOMIC_RELAXED);
  if (ppm == 0) return 0;
  uint64_t x = fault_rng;
  if (x == 0) x = hak_os_random() | 1;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  fault_rng = x;
  return x % 1000000 < ppm;
}

/* Counts the call and decides whether an injected failure applies to it. */
static int os_enter(hak_os_kind_t kind, size_t bytes) {
  __atomic_fetch_add(&os_calls[kind], 1, __ATOMIC_RELAXED);
  __atomic_fetch_add(&os_bytes[kind], bytes, __ATOMIC_RELAXED);
  if (__atomic_load_n(&os_fail_every[kind], __ATOMIC_RELAXED)) return ENOMEM;
  if (fault_drawn(kind)) return ENOMEM;
  uint64_t n = __atomic_load_n(&os_fail_countdown[kind], __ATOMIC_RELAXED);
  while (n != 0) {
    if (__atomic_compare_exchange_n(&os_fail_countdown[kind], &n, n - 1, 0, __ATOMIC_RELAXED,
                                    __ATOMIC_RELAXED)) {
      return n == 1 ? ENOMEM : 0;
    }
  }
  return 0;
}

static int os_fail(hak_os_kind_t kind, int err) {
  __atomic_fetch_add(&os_failures[kind], 1, __ATOMIC_RELAXED);
  return err == 0 ? ENOMEM : err;
}

/* Inaccessible reservations are not charged to overcommit accounting; read/write mappings
 * are, so that the kernel refuses what it could never back. */
static int map_flags(int prot) {
  return MAP_PRIVATE | MAP_ANONYMOUS | (prot == PROT_NONE ? MAP_NORESERVE : 0);
}

/* mmap with over-allocation and trimming when the alignment exceeds a page. The caller
 * has counted the call (os_enter) already. */
static int mmap_aligned(hak_os_kind_t kind, size_t size, size_t align, int prot, void **out) {
  size_t ps = hak_os_page_size();
  int flags = map_flags(prot);
  if (align <= ps) {
    void *p = mmap(NULL, size, prot, flags, -1, 0);
    if (p == MAP_FAILED) return os_fail(kind, ENOMEM);
    *out = p;
    return 0;
  }
  if (size + align < size) return os_fail(kind, ENOMEM);
  char *raw = mmap(NULL, size + align, prot, flags, -1, 0);
  if (raw == MAP_FAILED) return os_fail(kind, ENOMEM);
  char *aligned = (char *)(((uintptr_t)raw + align - 1) & ~(uintptr_t)(align - 1));
  size_t head = (size_t)(aligned - raw);
  size_t tail = align - head;
  /* The trims are part of this mapping's cost: count them as releases. A trim the kernel
   * refuses leaves that slack mapped but never touched (address space, not memory): it is
   * counted as a failure, and the aligned mapping is good either way. */
  if (head) {
    os_enter(HAK_OS_RELEASE, head);
    if (munmap(raw, head) != 0) os_fail(HAK_OS_RELEASE, errno);
  }
  if (tail) {
    os_enter(HAK_OS_RELEASE, tail);
    if (munmap(aligned + size, tail) != 0) os_fail(HAK_OS_RELEASE, errno);
  }
  *out = aligned;
  return 0;
}

static int os_mmap_aligned(hak_os_kind_t kind, size_t size, size_t align, int prot, void **out) {
  int err = os_enter(kind, size);
  if (err) return os_fail(kind, err);
  return mmap_aligned(kind, size, align, prot, out);
}

int hak_os_reserve(size_t size, size_t align, void **out) {
  return os_mmap_aligned(HAK_OS_RESERVE, size, align, PROT_NONE, out);
}

int hak_os_map(size_t size, size_t align, void **out) {
  return os_mmap_aligned(HAK_OS_MAP, size, align, PROT_READ | PROT_WRITE, out);
}

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000 /* Linux 4.17; glibc 2.28 headers */
#endif

/* Claims that had to be real reservations (see hak_os_claim): inside them, and only there,
 * a fixed mapping replaces our own inaccessible pages. */
#define MAX_RESERVED_CLAIMS 8
static uintptr_t reserved_claims[MAX_RESERVED_CLAIMS][2];
static unsigned reserved_claim_count;

static int in_reserved_claim(uintptr_t p, size_t size) {
  unsigned n = __atomic_load_n(&reserved_claim_count, __ATOMIC_ACQUIRE);
  for (unsigned i = 0; i < n; i++) {
    if (p >= reserved_claims[i][0] && p + size <= reserved_claims[i][1]) return 1;
  }
  return 0;
}

/* A fixed mapping that never replaces one already there (except our own reservation). A
 * kernel older than 4.17 takes the flag for a hint and may map elsewhere: that counts as
 * taken too. */
static int map_at(hak_os_kind_t kind, void *p, size_t size, int prot) {
  int err = os_enter(kind, size);
  if (err) return os_fail(kind, err);
  int fixed = in_reserved_claim((uintptr_t)p, size) ? MAP_FIXED : MAP_FIXED_NOREPLACE;
  void *q = mmap(p, size, prot, map_flags(prot) | fixed, -1, 0);
  if (q == MAP_FAILED) return os_fail(kind, errno == EEXIST ? EEXIST : ENOMEM);
  if (q != p) {
    munmap(q, size);
    return os_fail(kind, EEXIST);
  }
  return 0;
}

int hak_os_reserve_at(void *p, size_t size) { return map_at(HAK_OS_RESERVE, p, size, PROT_NONE); }

int hak_os_commit_at(void *p, size_t size) {
  return map_at(HAK_OS_COMMIT, p, size, PROT_READ | PROT_WRITE);
}

#define CLAIM_LOW ((uintptr_t)16 << 40)
#define CLAIM_SPAN ((uintptr_t)16 << 40)

uint64_t hak_os_random(void) {
  uint64_t r = 0;
  if (getrandom(&r, sizeof r, GRND_NONBLOCK) != (ssize_t)sizeof r) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    r = ((uint64_t)ts.tv_nsec ^ (uintptr_t)&r) * 0x9e3779b97f4a7c15ull;
  }
  return r;
}

/* Whether [p, p+size) is free: a probe mapping of all of it, or, where an address-space
 * limit refuses one that big, of its first and last pages. */
static int range_free(uintptr_t p, size_t size) {
  size_t ps = hak_os_page_size();
  int flags = map_flags(PROT_NONE) | MAP_FIXED_NOREPLACE;
  void *q = mmap((void *)p, size, PROT_NONE, flags, -1, 0);
  if (q != MAP_FAILED) {
    munmap(q, size);
    return q == (void *)p;
  }
  if (errno != ENOMEM) return 0;
  uintptr_t ends[2] = {p, p + size - ps};
  for (int i = 0; i < 2; i++) {
    q = mmap((void *)ends[i], ps, PROT_NONE, flags, -1, 0);
    if (q == MAP_FAILED) return 0;
    munmap(q, ps);
    if (q != (void *)ends[i]) return 0;
  }
  return 1;
}

int hak_os_claim(size_t size, size_t align, void **out) {
  size_t ps = hak_os_page_size();
  if (align < ps) align = ps;
  int err = os_enter(HAK_OS_RESERVE, size);
  if (err) return os_fail(HAK_OS_RESERVE, err);
  if (size == 0 || size > CLAIM_SPAN / 2) return os_fail(HAK_OS_RESERVE, ENOMEM);
  uint64_t r = hak_os_random();
  uintptr_t slots = (CLAIM_SPAN - size) / align;
  for (int attempt = 0; attempt < 16; attempt++) {
    uintptr_t p = CLAIM_LOW + (uintptr_t)((r >> 11) % slots) * align;
    if (range_free(p, size)) {
      *out = (void *)p;
      return 0;
    }
    r = r * 6364136223846793005ull + 1442695040888963407ull; /* next candidate */
  }
  /* No free range there (the sanitizers keep those addresses for their shadow memory):
   * reserve one wherever the kernel puts it, as a real PROT_NONE reservation, which
   * counts against RLIMIT_AS whole but cannot be taken by anything else. */
  unsigned n = reserved_claim_count;
  void *p;
  if (n == MAX_RESERVED_CLAIMS) return os_fail(HAK_OS_RESERVE, ENOMEM);
  err = mmap_aligned(HAK_OS_RESERVE, size, align, PROT_NONE, &p);
  if (err) return err;
  reserved_claims[n][0] = (uintptr_t)p;
  reserved_claims[n][1] = (uintptr_t)p + size;
  __atomic_store_n(&reserved_claim_count, n + 1, __ATOMIC_RELEASE);
  *out = p;
  return 0;
}

int hak_os_commit(void *p, size_t size) {
  int err = os_enter(HAK_OS_COMMIT, size);
  if (err) return os_fail(HAK_OS_COMMIT, err);
  if (mprotect(p, size, PROT_READ | PROT_WRITE) != 0) return os_fail(HAK_OS_COMMIT, ENOMEM);
  return 0;
}

int hak_os_decommit(void *p, size_t size) {
  int err = os_enter(HAK_OS_DECOMMIT, size);
  if (err) return os_fail(HAK_OS_DECOMMIT, err);
  if (madvise(p, size, MADV_DONTNEED) != 0) return os_fail(HAK_OS_DECOMMIT, errno);
  return 0;
}

/* The answer is the return value; errno is left as the caller had it (the first call
 * fails with EPERM before registering, and it runs inside malloc and free). */
static int barrier_all(void) {
  if (syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) == 0) return 0;
  if (errno != EPERM) return errno;
  /* Not registered (the first call, or the first in a fork child). */
  if (syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) != 0) return errno;
  return syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) == 0 ? 0 : errno;
}

int hak_os_barrier_all(void) {
  int saved = errno;
  int err = barrier_all();
  errno = saved;
  return err;
}

/* Reads /proc/self/task/<tid>/<file> into buf (NUL-terminated); 0 or an errno value. */
static int read_task_file(int tid, const char *file, char *buf, size_t cap) {
  char path[64] = "/proc/self/task/", digits[16];
  size_t len = strlen(path), nd = 0;
  if (tid <= 0 || strlen(file) > 16) return EINVAL;
  for (unsigned v = (unsigned)tid; v; v /= 10) digits[nd++] = (char)('0' + v % 10);
  while (nd) path[len++] = digits[--nd];
  path[len++] = '/';
  strcpy(path + len, file);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno;
  len = 0;
  for (ssize_t got; len + 1 < cap; len += (size_t)got) {
    got = read(fd, buf + len, cap - 1 - len);
    if (got < 0 && errno == EINTR) {
      got = 0;
      continue;
    }
    if (got <= 0) break;
  }
  close(fd);
  buf[len] = '\0';
  return len ? 0 : EIO;
}

/* The number after `key` in a status file, in base 10 or 16; 0 if absent. */
static uint64_t status_field(const char *text, const char *key, int base) {
  const char *at = strstr(text, key);
  return at ? strtoull(at + strlen(key), NULL, base) : 0;
}

/* The call a thread is blocked in, from the line of its syscall file (see below), and the
 * line's hash in *site. */
static long syscall_line(const char *line, uint64_t *site) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (const char *c = line; *c; c++) h = (h ^ (unsigned char)*c) * 0x100000001b3ull;
  *site = h;
  /* "running", or "-1 sp pc" outside a call, or "nr arg1 .. arg6 sp pc". */
  return line[0] >= '0' && line[0] <= '9' ? strtol(line, NULL, 10) : -1;
}

/* The status file is read between two readings of the syscall file, so that its counts
 * are those of the wait both show: a thread still on its way into a wait at the first
 * reading shows it only at the second (a line that differs reads as no wait). */
int hak_os_thread_state(int tid, hak_os_thread_t *out) {
  int saved = errno;
  char buf[4096], line[256];
  uint64_t site2;
  int err = read_task_file(tid, "syscall", line, sizeof line);
  if (!err) err = read_task_file(tid, "status", buf, sizeof buf);
  if (!err) {
    out->switches = status_field(buf, "\nvoluntary_ctxt_switches:", 10) +
                    status_field(buf, "\nnonvoluntary_ctxt_switches:", 10);
    out->blocked = status_field(buf, "\nSigBlk:", 16);
    out->call = syscall_line(line, &out->site);
    err = read_task_file(tid, "syscall", buf, sizeof line);
  }
  if (!err && (syscall_line(buf, &site2) != out->call || site2 != out->site)) out->call = -1;
  errno = saved;
  return err;
}

int hak_os_thread_id(void) { return (int)syscall(SYS_gettid); }

uint64_t hak_os_thread_blocked(void) {
  sigset_t set;
  uint64_t bits = 0;
  if (pthread_sigmask(SIG_BLOCK, NULL, &set) != 0) return ~(uint64_t)0;
  for (int sig = 1; sig <= 64; sig++) {
    if (sigismember(&set, sig) == 1) bits |= (uint64_t)1 << (sig - 1);
  }
  return bits;
}

size_t hak_os_resident(const void *p, size_t size) {
  size_t ps = hak_os_page_size();
  uintptr_t start = (uintptr_t)p & ~(uintptr_t)(ps - 1);
  uintptr_t end = ((uintptr_t)p + size + ps - 1) & ~(uintptr_t)(ps - 1);
  unsigned char vec[4096];
  size_t resident = 0;
  while (start < end) {
    size_t pages = (end - start) / ps < sizeof vec ? (end - start) / ps : sizeof vec;
    if (mincore((void *)start, pages * ps, vec) == 0) {
      for (size_t i = 0; i < pages; i++) resident += vec[i] & 1;
    }
    start += pages * ps;
  }
  return resident * ps;
}

/* ASan builds (asan.h): the shadow pages wholly inside [p, p + n)'s shadow go back to the
 * kernel and read as zero (addressable); the partial pages at the ends are cleared. */
void hak_asan_clear(const void *p, size_t n) {
#if HAK_ASAN_BUILD
  size_t scale, offset;
  __asan_get_shadow_mapping(&scale, &offset);
  uintptr_t lo = ((uintptr_t)p >> scale) + offset;
  uintptr_t hi = (((uintptr_t)p + n) >> scale) + offset;
  uintptr_t page = hak_os_page_size();
  uintptr_t a = (lo + page - 1) & ~(page - 1), b = hi & ~(page - 1);
  if (a >= b || madvise((void *)a, b - a, MADV_DONTNEED) != 0) {
    __asan_unpoison_memory_region(p, n);
    return;
  }
  uintptr_t first = (a - offset) << scale, last = (b - offset) << scale;
  __asan_unpoison_memory_region(p, first - (uintptr_t)p);
  __asan_unpoison_memory_region((void *)last, (uintptr_t)p + n - last);
#else
  (void)p;
  (void)n;
#endif
}

int hak_os_release(void *p, size_t size) {
  int err = os_enter(HAK_OS_RELEASE, size);
  if (err) return os_fail(HAK_OS_RELEASE, err);
  if (munmap(p, size) != 0) return os_fail(HAK_OS_RELEASE, errno);
  hak_asan_clear(p, size);
  return 0;
}

int hak_os_remap(void *p, size_t old_size, size_t new_size, int may_move, void **out) {
  int err = os_enter(HAK_OS_REMAP, new_size);
  if (err) return os_fail(HAK_OS_REMAP, err);
  void *q = mremap(p, old_size, new_size, may_move ? MREMAP_MAYMOVE : 0);
  if (q == MAP_FAILED) return os_fail(HAK_OS_REMAP, ENOMEM);
  if (q != p) {
    hak_asan_clear(p, old_size); /* unmapped by the move */
  } else if (new_size < old_size) {
    hak_asan_clear((char *)p + new_size, old_size - new_size);
  }
  *out = q;
  return 0;
}

int hak_os_remap_to(void *p, size_t old_size, size_t new_size, void *dest) {
  int err = os_enter(HAK_OS_REMAP, new_size);
  if (err) return os_fail(HAK_OS_REMAP, err);
  if (mremap(p, old_size, new_size, MREMAP_MAYMOVE | MREMAP_FIXED, dest) == MAP_FAILED) {
    return os_fail(HAK_OS_REMAP, ENOMEM);
  }
  hak_asan_clear(p, old_size); /* unmapped by the move */
  return 0;
}

#ifndef MREMAP_DONTUNMAP
#define MREMAP_DONTUNMAP 4 /* Linux 5.7; older headers lack it */
#endif

int hak_os_move_pages(void *p, size_t size, void *dest) {
  int err = os_enter(HAK_OS_REMAP, size);
  if (err) return os_fail(HAK_OS_REMAP, err);
  int flags = MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP;
  if (mremap(p, size, size, flags, dest) == MAP_FAILED) {
    return os_fail(HAK_OS_REMAP, errno == EINVAL ? EINVAL : ENOMEM);
  }
  return 0;
}

int hak_os_protect(void *p, size_t size, int prot) {
  int err = os_enter(HAK_OS_PROTECT, size);
  if (err) return os_fail(HAK_OS_PROTECT, err);
  if (mprotect(p, size, prot) != 0) return os_fail(HAK_OS_PROTECT, errno);
  return 0;
}

#define META_CHUNK (64 * 1024)

static pthread_mutex_t meta_lock = PTHREAD_MUTEX_INITIALIZER;
static char *meta_next;
static size_t meta_left;

int hak_os_meta_alloc(size_t size, void **out) {
  size = (size + 63) & ~(size_t)63;
  if (size > META_CHUNK) return ENOMEM;
  int err = 0;
  pthread_mutex_lock(&meta_lock);
  if (meta_left < size) {
    void *chunk;
    err = hak_os_map(META_CHUNK, 0, &chunk);
    if (err == 0) {
      meta_next = chunk;
      meta_left = META_CHUNK;
    }
  }
  if (err == 0) {
    *out = meta_next;
    meta_next += size;
    meta_left -= size;
  }
  pthread_mutex_unlock(&meta_lock);
  return err;
}

void hak_os_fork_child(void) {
  if (hak_fork_child_reset_lock(&meta_lock)) meta_left = 0; /* start a fresh chunk */
}

void hak_os_counters(hak_os_counters_t *out) {
  for (int k = 0; k < HAK_OS_KIND_COUNT; k++) {
    out->calls[k] = __atomic_load_n(&os_calls[k], __ATOMIC_RELAXED);
    out->bytes[k] = __atomic_load_n(&os_bytes[k], __ATOMIC_RELAXED);
    out->failures[k] = __atomic_load_n(&os_failures[k], __ATOMIC_RELAXED);
  }
}

uint64_t hak_os_total_calls(const hak_os_counters_t *c) {
  uint64_t total = 0;
  for (int k = 0; k < HAK_OS_KIND_COUNT; k++) total += c->calls[k];
  return total;
}

void hak_os_fail_nth(hak_os_kind_t kind, uint64_t n) {
  __atomic_store_n(&os_fail_countdown[kind], n, __ATOMIC_RELAXED);
}

void hak_os_fail_every(hak_os_kind_t kind, int on) {
  __atomic_store_n(&os_fail_every[kind], on, __ATOMIC_RELAXED);
}

void hak_os_fail_rate(hak_os_kind_t kind, uint32_t per_million) {
  if (per_million > 1000000) per_million = 1000000;
  __atomic_store_n(&os_fail_ppm[kind], per_million, __ATOMIC_RELAXED);
}
