/* The OS contract: the only functions in hakmem that issue memory system calls
 * (mmap, munmap, mprotect, madvise, mremap). Every call and byte is counted per kind in
 * every variant, and tests can make the n-th call of a kind fail. Functions return 0 on
 * success or an errno value (ENOMEM for any failed mapping, EEXIST where a fixed mapping
 * would replace another); none of them crash, abort or allocate. Sizes must be multiples
 * of hak_os_page_size() unless stated otherwise.
 *
 * Read/write mappings are charged to the kernel's overcommit accounting, so a request
 * the kernel's policy refuses (64 GiB on a 24 GiB machine under the default heuristic)
 * fails here instead of killing the program later. Only inaccessible reservations skip
 * the charge. */
#ifndef HAK_ALLOCATOR_OS_BOUNDARY_OS_H
#define HAK_ALLOCATOR_OS_BOUNDARY_OS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
  HAK_OS_RESERVE,  /* mmap PROT_NONE: address space only */
  HAK_OS_MAP,      /* mmap read/write: memory ready to use */
  HAK_OS_COMMIT,   /* mprotect read/write inside a reservation */
  HAK_OS_DECOMMIT, /* madvise(MADV_DONTNEED): give the pages back, keep the range */
  HAK_OS_RELEASE,  /* munmap */
  HAK_OS_REMAP,    /* mremap */
  HAK_OS_PROTECT,  /* mprotect with other rights */
  HAK_OS_KIND_COUNT
} hak_os_kind_t;

typedef struct {
  uint64_t calls[HAK_OS_KIND_COUNT];
  uint64_t bytes[HAK_OS_KIND_COUNT];
  uint64_t failures[HAK_OS_KIND_COUNT];
} hak_os_counters_t;

/* The system page size (cached after the first call). */
/* Random fault injection (HAKMEM_FAULT_RATE, tests): `per_million` of the calls of
 * `kind` (0 = none, at most 1,000,000) fail with ENOMEM without reaching the kernel,
 * drawn independently per thread. */
void hak_os_fail_rate(hak_os_kind_t kind, uint32_t per_million);

/* 64 random bits from getrandom(2) (a clock-derived value if that fails): the claim's
 * address and the free-list key. */
uint64_t hak_os_random(void);

size_t hak_os_page_size(void);

/* Reserves `size` bytes of address space aligned to `align` (a power of two; 0 = page),
 * inaccessible until committed and charged to no memory. *out is set on success. */
int hak_os_reserve(size_t size, size_t align, void **out);

/* Maps `size` fresh zeroed read/write bytes aligned to `align` (power of two; 0 = page). */
int hak_os_map(size_t size, size_t align, void **out);

/* Picks `size` bytes of address space aligned to `align` (a power of two) for the fixed
 * mappings below, and maps nothing: the range costs neither memory nor RLIMIT_AS until
 * parts of it are mapped, so a limit lowered later still leaves the rest of the process
 * room. The range is random within [16 TiB, 32 TiB), far below where the kernel puts
 * mappings of its own choosing (top-down from just under 128 TiB), and free when picked
 * (probed with a mapping of it, or of its first and last pages where a limit refuses
 * that). Where no such range is free (under ThreadSanitizer, whose shadow lives there),
 * the claim is a PROT_NONE reservation wherever the kernel puts it, as hakmem's range
 * used to be. Counted as one reservation. Returns 0 (*out set) or ENOMEM. Not
 * thread-safe against other claims (hakmem makes one, at initialisation). */
int hak_os_claim(size_t size, size_t align, void **out);

/* Maps [p, p+size) inaccessible (reserve_at) or read/write (commit_at, counted as a
 * commit) at exactly p, never replacing a mapping already there (EEXIST then), except
 * inside a claim that is a reservation, whose own pages it replaces. */
int hak_os_reserve_at(void *p, size_t size);
int hak_os_commit_at(void *p, size_t size);

/* Makes [p, p+size) of a reservation readable and writable. */
int hak_os_commit(void *p, size_t size);

/* Returns the pages of [p, p+size) to the OS; the range stays mapped and reads as zero. */
int hak_os_decommit(void *p, size_t size);

/* Bytes of [p, p + size) resident in memory now (mincore), for statistics; 0 for a range
 * that is not mapped. A query, not a change: not counted among the calls above. */
size_t hak_os_resident(const void *p, size_t size);

/* Unmaps [p, p+size) (reserved or mapped). */
int hak_os_release(void *p, size_t size);

/* Resizes the mapping [p, p+old_size) to new_size. With may_move == 0 it only succeeds
 * in place (*out == p); otherwise the kernel may move it. */
int hak_os_remap(void *p, size_t old_size, size_t new_size, int may_move, void **out);

/* Moves the pages of [p, p+old_size) to dest (a mapping of new_size bytes the caller owns,
 * which they replace), growing to new_size: no byte is copied. [p, p+old_size) is gone
 * afterwards. On failure both mappings are left as they were. */
int hak_os_remap_to(void *p, size_t old_size, size_t new_size, void *dest);

/* Moves the pages of [p, p+size) onto [dest, dest+size) (part of a read/write mapping the
 * caller owns, which they replace) without copying a byte; [p, p+size) stays mapped and
 * reads as zero afterwards (mremap with MREMAP_DONTUNMAP). Counted as a remap. Returns 0,
 * EINVAL where the kernel lacks the flag (before Linux 5.7), or ENOMEM; on failure both
 * ranges are as they were. */
int hak_os_move_pages(void *p, size_t size, void *dest);

/* Changes the access rights of [p, p+size) to `prot` (PROT_* bits). */
int hak_os_protect(void *p, size_t size, int prot);

/* `size` bytes of zeroed memory for the allocator's own long-lived metadata (thread
 * heaps), 64-byte aligned, carved from 64 KiB mappings and never given back. Returns 0
 * or ENOMEM. Thread-safe; its callers hold a lock that their fork handlers take, so no
 * fork can happen while it runs. */
int hak_os_meta_alloc(size_t size, void **out);

/* Makes every thread of the process pass a full memory barrier before it returns
 * (membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED), registering the process on first use
 * and again in a fork child). Returns 0, or an errno value when the kernel cannot (then
 * the caller must not rely on it); errno itself is left as it was. Not a memory call:
 * not counted. */
int hak_os_barrier_all(void);

/* What the kernel says of thread `tid` of this process (/proc/self/task/<tid>/status and
 * /syscall), for the purge's flush of an idle thread's caches (heap/heap.h). */
typedef struct {
  uint64_t switches; /* its context switches so far, voluntary and not */
  uint64_t blocked;  /* the signals it blocks now (bit n - 1 for signal n, the first 64) */
  long call;         /* the system call it is blocked in; -1 when it is not blocked in one
                        (running, runnable, stopped or waiting on a page fault) */
  uint64_t site;     /* a hash of the call's arguments, stack and instruction pointers:
                        two readings of one wait give the same */
} hak_os_thread_t;

/* Reads thread `tid`'s state. Returns 0, or an errno value (ENOENT: no such thread, or
 * /proc not there; EACCES). Allocation-free: a few hundred bytes of stack. Not a memory
 * call: not counted. errno is left as it was. */
int hak_os_thread_state(int tid, hak_os_thread_t *out);

/* The calling thread's kernel id, and the signals it blocks (as `blocked` above). */
int hak_os_thread_id(void);
uint64_t hak_os_thread_blocked(void);

/* In a fork child: unlocks the metadata allocator; if a thread was inside it at the fork,
 * the rest of its current chunk is abandoned. */
void hak_os_fork_child(void);

/* Snapshot of the counters (relaxed reads; exact once other threads are quiet). */
void hak_os_counters(hak_os_counters_t *out);

/* Sum of calls over every kind: the "memory system calls" figure. */
uint64_t hak_os_total_calls(const hak_os_counters_t *c);

/* Name of a kind ("reserve", "map", ...). */
const char *hak_os_kind_name(hak_os_kind_t kind);

#ifdef __cplusplus
}
#endif

#endif /* HAK_ALLOCATOR_OS_BOUNDARY_OS_H */
