/* Test-only hooks of the OS boundary: nothing in the allocator calls them. */
#ifndef HAK_ALLOCATOR_OS_BOUNDARY_OS_TESTING_H
#define HAK_ALLOCATOR_OS_BOUNDARY_OS_TESTING_H

#include <stdint.h>

#include "allocator/os_boundary/os.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Fault injection: the n-th next call of `kind` (n >= 1) fails with ENOMEM without
 * reaching the kernel; n == 0 cancels. */
void hak_os_fail_nth(hak_os_kind_t kind, uint64_t n);

/* Every call of `kind` fails with ENOMEM while `on` is non-zero. */
void hak_os_fail_every(hak_os_kind_t kind, int on);

#ifdef __cplusplus
}
#endif

#endif /* HAK_ALLOCATOR_OS_BOUNDARY_OS_TESTING_H */
