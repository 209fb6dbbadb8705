/* The purge thread of purge.h. */
#define _GNU_SOURCE
#include "allocator/internal/purge.h"

#include <pthread.h>
#include <signal.h>
#include <time.h>

#include "allocator/internal/clock.h"
#include "allocator/internal/options.h"

enum { PURGE_NONE = 0, PURGE_STARTING = 1, PURGE_RUNNING = 2, PURGE_FAILED = 3 };

static int state;             /* PURGE_*; NONE until the first kick */
int hak_purge_kicked;         /* a kick since the thread last looked (sequentially consistent) */
static int sleeping;          /* the thread waits for a kick (sequentially consistent) */
static uint64_t passes;       /* passes run, for tests and statistics */
static uint64_t kicked_bytes; /* what the kicks reported before the start */
int hak_purge_start_wanted;
HAK_TLS int hak_purge_defer_depth;
static HAK_TLS int in_purge_thread;
static int (*pass_fn)(void);
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER; /* the wait below */
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;

void hak_purge_set_pass(int (*pass)(void)) { pass_fn = pass; }

static void (*relief_fn)(uint64_t bytes);

void hak_purge_set_relief(void (*relief)(uint64_t bytes)) {
  __atomic_store_n(&relief_fn, relief, __ATOMIC_RELEASE);
}

void hak_purge_relieve(uint64_t bytes) {
  void (*relief)(uint64_t) = __atomic_load_n(&relief_fn, __ATOMIC_ACQUIRE);
  if (relief) relief(bytes);
}

int hak_purge_in_thread(void) { return in_purge_thread; }

static void sleep_ms(uint64_t ms) {
  struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0) {
  }
}

/* Waits for a kick, at most until `deadline` (CLOCK_MONOTONIC; NULL: no limit). */
static void wait_for_kick(const struct timespec *deadline) {
  pthread_mutex_lock(&lock);
  __atomic_store_n(&sleeping, 1, __ATOMIC_SEQ_CST);
  while (!__atomic_load_n(&hak_purge_kicked, __ATOMIC_SEQ_CST)) {
    if (!deadline) {
      pthread_cond_wait(&wake, &lock);
    } else if (pthread_cond_clockwait(&wake, &lock, CLOCK_MONOTONIC, deadline) != 0) {
      break; /* the deadline passed (or a failure: the next pass comes anyway) */
    }
  }
  __atomic_store_n(&sleeping, 0, __ATOMIC_SEQ_CST);
  pthread_mutex_unlock(&lock);
}

/* Runs passes a step apart while memory waits; when none does, sleeps for a kick, or for
 * half a decay while live heaps are watched. The sleeping flag and the kicked flag are a
 * Dekker pair (both sequentially consistent): a kick either sees the thread asleep and
 * signals it, or the thread sees the kick. */
static void *purge_main(void *arg) {
  (void)arg;
  in_purge_thread = 1;
  pthread_setname_np(pthread_self(), "hakmem-purge");
  for (;;) {
    __atomic_store_n(&hak_purge_kicked, 0, __ATOMIC_SEQ_CST);
    int waiting = pass_fn();
    __atomic_fetch_add(&passes, 1, __ATOMIC_RELAXED);
    if (!(waiting & HAK_PURGE_WAITING)) {
      struct timespec deadline;
      if ((waiting & HAK_PURGE_WATCHING) && clock_gettime(CLOCK_MONOTONIC, &deadline) == 0) {
        uint64_t ns = (uint64_t)deadline.tv_nsec + (uint64_t)hak_opt(HAK_OPT_DECAY_MS) * 500000u;
        deadline.tv_sec += (time_t)(ns / 1000000000u);
        deadline.tv_nsec = (long)(ns % 1000000000u);
        wait_for_kick(&deadline);
      } else {
        wait_for_kick(NULL);
      }
    }
    sleep_ms(hak_decay_step_ms());
  }
  return NULL;
}

static void start(void) {
  int expected = PURGE_NONE;
  if (!__atomic_compare_exchange_n(&state, &expected, PURGE_STARTING, 0, __ATOMIC_ACQ_REL,
                                   __ATOMIC_ACQUIRE)) {
    return;
  }
  /* No signal of the program is ever delivered to this thread. pthread_create may call
   * malloc (thread-local storage); the STARTING state keeps that from starting another. */
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  pthread_attr_t attr;
  pthread_t th;
  int ok = pthread_attr_init(&attr) == 0;
  if (ok) {
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 64 * 1024);
    ok = pthread_create(&th, &attr, purge_main, NULL) == 0;
    pthread_attr_destroy(&attr);
  }
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  /* A failed start is not retried: the passes still run from allocator calls. */
  __atomic_store_n(&state, ok ? PURGE_RUNNING : PURGE_FAILED, __ATOMIC_RELEASE);
}

void hak_purge_kick_slow(uint64_t bytes) {
  if (!pass_fn || !hak_opt(HAK_OPT_PURGE_THREAD)) return;
  int s = __atomic_load_n(&state, __ATOMIC_ACQUIRE);
  if (s == PURGE_NONE) {
    if (__atomic_add_fetch(&kicked_bytes, bytes, __ATOMIC_RELAXED) >= HAK_PURGE_START_BYTES) {
      if (hak_purge_defer_depth)
        __atomic_store_n(&hak_purge_start_wanted, 1, __ATOMIC_RELAXED);
      else
        start();
    }
    return;
  }
  if (s != PURGE_RUNNING || __atomic_load_n(&hak_purge_kicked, __ATOMIC_RELAXED)) return;
  __atomic_store_n(&hak_purge_kicked, 1, __ATOMIC_SEQ_CST);
  if (__atomic_load_n(&sleeping, __ATOMIC_SEQ_CST)) {
    pthread_mutex_lock(&lock);
    pthread_cond_signal(&wake);
    pthread_mutex_unlock(&lock);
  }
}

void hak_purge_start_deferred(void) {
  if (__atomic_load_n(&state, __ATOMIC_ACQUIRE) == PURGE_NONE) start();
  __atomic_store_n(&hak_purge_start_wanted, 0, __ATOMIC_RELAXED);
}

void hak_purge_fork_child(void) {
  pthread_mutex_init(&lock, NULL);
  pthread_cond_init(&wake, NULL);
  hak_purge_kicked = sleeping = 0;
  kicked_bytes = 0;
  hak_purge_start_wanted = 0;
  /* The forking thread may have forked from inside a deferred region (a signal handler):
   * its count stays, so that the region's end still balances. */
  state = PURGE_NONE;
}

uint64_t hak_purge_passes(void) { return __atomic_load_n(&passes, __ATOMIC_RELAXED); }

int hak_purge_running(void) { return __atomic_load_n(&state, __ATOMIC_ACQUIRE) == PURGE_RUNNING; }
