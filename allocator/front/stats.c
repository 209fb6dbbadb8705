/* Statistics: hak_stats_get gathers every tier's counters into the one list in hakmem.h,
 * hak_stats_print writes that list (and the trace variant's route counters). */
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "allocator/front/init.h"
#include "allocator/hakmem.h"
#include "allocator/internal/log.h"
#include "allocator/internal/trace.h"
#include "allocator/large/large.h"
#include "allocator/os_boundary/os.h"

void hak_stats_get(hak_stats_t *out) {
  memset(out, 0, sizeof *out);
  hak_os_counters_t os;
  hak_os_counters(&os);
  for (int k = 0; k < HAK_OS_KIND_COUNT; k++) {
    out->os_calls[k] = os.calls[k];
    out->os_bytes[k] = os.bytes[k];
    out->os_failures[k] = os.failures[k];
  }
  out->os_calls_total = hak_os_total_calls(&os);
  out->committed_bytes = (int64_t)os.bytes[HAK_OS_COMMIT] - (int64_t)os.bytes[HAK_OS_DECOMMIT];
  if (hak_front.ready) {
    hak_tiny_stats_t t;
    hak_tiny_stats(&t);
    out->tiny_refills = t.refills;
    out->tiny_overflows = t.overflows;
    out->tiny_remote_frees = t.remote_frees;
    out->tiny_slabs_in_use = t.slabs_in_use;
    out->tiny_superslabs = t.superslabs;
    out->tiny_empty_superslabs = t.empty_superslabs;
    out->tiny_decommitted_superslabs = t.decommitted_superslabs;
    out->tiny_resident_bytes = t.resident_bytes;
    out->foreign_frees += hak_tiny_foreign_frees();
    out->idle_flushes += t.idle_flushes;
  }
  if (hak_front_pool_ready()) {
    hak_pool_stats_t p;
    hak_pool_stats(&p);
    out->pool_refills = p.refills;
    out->pool_overflows = p.overflows;
    out->pool_remote_frees = p.remote_frees;
    out->pool_pages_in_use = p.pages_in_use;
    out->pool_resident_bytes = p.resident_bytes;
    out->foreign_frees += p.foreign_frees;
    out->idle_flushes += p.idle_flushes;
  }
  hak_heap_remote_counts(&out->remote_batches, &out->remote_flushes);
  hak_large_stats_t l;
  hak_large_stats(&l);
  out->large_live_blocks = l.live_blocks;
  out->large_live_bytes = l.live_bytes;
  out->large_cached_blocks = l.cached_blocks;
  out->large_cached_bytes = l.cached_bytes;
  out->bigcache_hits = l.cache_hits;
  out->bigcache_misses = l.cache_misses;
  out->large_moved_bytes = l.moved_bytes;
  out->large_unreleased_bytes = l.unreleased_bytes;
  out->large_resident_bytes = l.resident_bytes;
  out->committed_bytes -= l.os_committed_bytes; /* the Tiny/Pool range's alone */
  out->resident_bytes = out->tiny_resident_bytes + out->pool_resident_bytes + l.resident_bytes;
  out->foreign_frees += __atomic_load_n(&hak_front.foreign_frees, __ATOMIC_RELAXED);
  out->reserved_bytes = hak_front.total;
}

static void line_u64(hak_buf_t *b, const char *label, uint64_t v) {
  hak_buf_str(b, "  ");
  hak_buf_str(b, label);
  hak_buf_str(b, " ");
  hak_buf_u64(b, v);
  hak_buf_str(b, "\n");
}

void hak_stats_print(int fd) {
  char text[4096];
  hak_buf_t b = {text, 0, sizeof text};
  hak_stats_t s;
  hak_stats_get(&s);
  /* Which process: a program started through a shell or a wrapper prints one block per
   * process, and a reader must find its own. */
  char comm[17] = {0};
  if (prctl(PR_GET_NAME, comm, 0, 0, 0) != 0) comm[0] = 0;
  hak_buf_str(&b, "hakmem stats of pid ");
  hak_buf_u64(&b, (uint64_t)getpid());
  hak_buf_str(&b, " ");
  hak_buf_str(&b, comm[0] ? comm : "?");
  hak_buf_str(&b, " (" HAK_VARIANT_NAME ", " HAK_VARIANT_FLAGS ")\n");
#define HAK_PRINT_COUNTER(field, label, what) line_u64(&b, label, s.field);
  HAK_STATS_COUNTERS(HAK_PRINT_COUNTER)
#undef HAK_PRINT_COUNTER
  line_u64(&b, "committed bytes", (uint64_t)(s.committed_bytes > 0 ? s.committed_bytes : 0));
  hak_buf_str(&b, "  memory system calls");
  for (int k = 0; k < HAK_OS_KIND_COUNT; k++) {
    hak_buf_str(&b, " ");
    hak_buf_str(&b, hak_os_kind_name((hak_os_kind_t)k));
    hak_buf_str(&b, "=");
    hak_buf_u64(&b, s.os_calls[k]);
  }
  hak_buf_str(&b, " total=");
  hak_buf_u64(&b, s.os_calls_total);
  hak_buf_str(&b, "\n");
  if (HAK_TRACE) {
    for (int r = 0; r < HAK_ROUTE_COUNT; r++) {
      hak_buf_str(&b, "  route ");
      hak_buf_str(&b, hak_route_names[r]);
      hak_buf_str(&b, " ");
      hak_buf_u64(&b, __atomic_load_n(&hak_route_counts[r], __ATOMIC_RELAXED));
      hak_buf_str(&b, "\n");
    }
  }
  hak_buf_flush(&b, fd);
}

void hak_front_malloc_stats(void) { hak_stats_print(2); }

const char *hak_variant(void) { return HAK_VARIANT_NAME " " HAK_VARIANT_FLAGS; }
