// A fuzz target for the whole malloc family through the hak_* API: each input is a
// program of calls (sizes across all tiers and at the limits, alignments good and bad,
// realloc chains, frees handed to another thread) run against a shadow model. Every
// live block's bytes are checked before it is freed or resized, every answer against
// the contract: alignment, usable size, calloc's zeros, NULL with ENOMEM or EINVAL only
// where a request cannot be served. A violation prints one line and aborts.
//
// Built two ways: with libFuzzer (`bazel build --config=fuzz //tests:family_fuzzer`,
// clang), and with fuzz_main.cc, which feeds it seeded random inputs for a fixed number
// of iterations (//tests:fuzz_test, part of `bazel test //...`, in every variant and
// under --config=tsan / --config=asan).
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

#include "allocator/hakmem.h"

namespace {

#define FUZZ_CHECK(cond, what)                                                \
  do {                                                                        \
    if (!(cond)) {                                                            \
      fprintf(stderr, "family_fuzz: %s (%s:%d)\n", what, __FILE__, __LINE__); \
      abort();                                                                \
    }                                                                         \
  } while (0)

struct Block {
  unsigned char *p = nullptr;
  size_t n = 0;
  uint32_t seed = 0;
};

unsigned char Byte(uint32_t seed, size_t i) {
  return static_cast<unsigned char>(seed * 131 + i * 31);
}

// The bytes a block's stamp covers: its first and last 256 and one per 4 KiB page (whole
// stamps of 8 MiB blocks would make the target slow).
template <typename F>
void ForStamped(size_t n, F f) {
  size_t head = n < 256 ? n : 256;
  for (size_t i = 0; i < head; i++) f(i);
  for (size_t i = head; i + 256 < n; i += 4096) f(i);
  for (size_t i = n > 256 && n - 256 > head ? n - 256 : head; i < n; i++) f(i);
}

void Stamp(Block *b) {
  ForStamped(b->n, [&](size_t i) { b->p[i] = Byte(b->seed, i); });
}

// Checks the first `n` bytes of b's stamp (a resized block keeps a prefix).
void Verify(const Block &b, size_t n, const char *what) {
  ForStamped(b.n, [&](size_t i) {
    if (i < n) FUZZ_CHECK(b.p[i] == Byte(b.seed, i), what);
  });
}

void CheckZero(const unsigned char *p, size_t n) {
  ForStamped(n,
             [&](size_t i) { FUZZ_CHECK(p[i] == 0, "calloc returned a byte that is not zero"); });
}

// A new block of n bytes aligned to `align`: checks it and stamps it.
void Accept(Block *b, void *p, size_t n, size_t align, uint32_t seed) {
  FUZZ_CHECK(reinterpret_cast<uintptr_t>(p) % (align < 16 ? 16 : align) == 0,
             "a block is not aligned as asked (or to 16 bytes)");
  FUZZ_CHECK(hak_malloc_usable_size(p) >= n, "usable size below the size asked for");
  *b = Block{static_cast<unsigned char *>(p), n, seed};
  Stamp(b);
}

// A refusal: only where the request cannot be served, and with the right errno.
void Refusal(size_t n, size_t align, int err, int expected) {
  if (err != expected) fprintf(stderr, "family_fuzz: n %zu align %zu errno %d\n", n, align, err);
  FUZZ_CHECK(err == expected, "a refusal with the wrong errno");
  // Everything up to 8 MiB at an alignment up to 64 MiB fits on any test machine.
  FUZZ_CHECK(expected == EINVAL || n > (size_t{8} << 20) || align > (size_t{64} << 20),
             "a request that fits was refused");
}

// Frees handed to another thread: a worker verifies and frees them.
class Remote {
 public:
  void Give(const Block &b) {
    std::lock_guard<std::mutex> g(mu_);
    if (!started_) {
      std::thread([this] { Run(); }).detach();
      started_ = true;
    }
    queue_.push_back(b);
    cv_.notify_all();
  }
  // Waits until every block given so far is freed.
  void Drain() {
    std::unique_lock<std::mutex> g(mu_);
    cv_.wait(g, [this] { return queue_.empty() && busy_ == 0; });
  }

 private:
  void Run() {
    std::unique_lock<std::mutex> g(mu_);
    for (;;) {
      cv_.wait(g, [this] { return !queue_.empty(); });
      Block b = queue_.front();
      queue_.pop_front();
      busy_++;
      g.unlock();
      Verify(b, b.n, "a block freed by another thread lost its contents");
      hak_free(b.p);
      g.lock();
      busy_--;
      cv_.notify_all();
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Block> queue_;
  int busy_ = 0;
  bool started_ = false;
};

Remote &TheRemote() {
  static Remote *r = new Remote;  // never destroyed: its thread outlives main's return
  return *r;
}

// Reads the input a byte at a time; zeros once it is used up.
struct Input {
  const uint8_t *d;
  size_t n, at = 0;
  uint8_t U8() { return at < n ? d[at++] : 0; }
  uint32_t U32() {
    return uint32_t(U8()) | uint32_t(U8()) << 8 | uint32_t(U8()) << 16 | uint32_t(U8()) << 24;
  }
  bool Done() const { return at >= n; }
};

// A size from every tier and from the limits. Blocks of megabytes are rare: each page
// a stamp touches is a page fault, and they would make the kernel the whole run.
size_t Size(Input *in) {
  uint8_t kind = in->U8();
  uint32_t v = in->U32();
  switch (kind % 32) {
    case 0:
      return 0;
    case 1:
      return SIZE_MAX - v % 8192;
    case 2:
      return (size_t{1} << (47 + v % 17)) - v % 3;  // 2^47 .. 2^63, and just below
    case 3:
      return SIZE_MAX / 2 + v % 3;
    case 4:
      return v % 64;
    case 5:
      return 65537 + v % (1 << 20);  // Large
    case 6:
      return kind >= 192 ? (size_t{1} << 20) + v % (size_t{7} << 20) : 65537 + v % 65536;
    default:
      return kind % 3 == 0 ? 1025 + v % 64512 : 1 + v % 1024;  // Pool, Tiny
  }
}

// An alignment: mostly powers of two from 1 to 64 MiB, sometimes not a power of two or
// far too big.
size_t Align(Input *in) {
  uint8_t a = in->U8();
  if (a < 200) return size_t{1} << (a % 27);
  if (a < 230) return 3 + a;          // not a power of two
  return size_t{1} << (40 + a % 24);  // 2^40 .. 2^63
}

bool PowerOfTwo(size_t a) { return a != 0 && (a & (a - 1)) == 0; }

constexpr int kSlots = 32;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  Input in{data, size};
  Block slots[kSlots];
  uint32_t seed = 1;
  while (!in.Done()) {
    Block &b = slots[in.U8() % kSlots];
    uint8_t op = in.U8() % 11;
    seed++;
    errno = 0;
    switch (op) {
      case 0:
      case 1: {  // malloc, into an empty slot (a full one is freed first)
        if (b.p) {
          Verify(b, b.n, "a block lost its contents before free");
          hak_free(b.p);
          b = Block{};
        }
        size_t n = Size(&in);
        void *p = hak_malloc(n);
        p ? Accept(&b, p, n, 1, seed) : Refusal(n, 1, errno, ENOMEM);
        break;
      }
      case 2: {  // calloc, with products that overflow
        if (b.p) break;
        size_t count = in.U8() % 4 == 0 ? Size(&in) : 1 + in.U8() % 4;
        size_t n = Size(&in);
        size_t total;
        bool overflow = __builtin_mul_overflow(count, n, &total);
        void *p = hak_calloc(count, n);
        if (overflow) {
          FUZZ_CHECK(p == nullptr && errno == ENOMEM, "calloc of an overflowing product");
          break;
        }
        if (!p) {
          Refusal(total, 1, errno, ENOMEM);
          break;
        }
        if (total > (size_t{64} << 20)) {  // served (a product of two sizes): not kept
          auto *z = static_cast<unsigned char *>(p);
          FUZZ_CHECK(z[0] == 0 && z[total / 2] == 0 && z[total - 1] == 0,
                     "calloc returned a byte that is not zero");
          hak_free(p);
          break;
        }
        CheckZero(static_cast<unsigned char *>(p), total);
        Accept(&b, p, total, 1, seed);
        break;
      }
      case 3:
      case 4: {  // realloc: grow, shrink, 0 frees; a refusal leaves the block intact
        size_t n = Size(&in);
        if (!b.p) break;
        Verify(b, b.n, "a block lost its contents before realloc");
        void *p = hak_realloc(b.p, n);
        if (n == 0) {
          FUZZ_CHECK(p == nullptr, "realloc(p, 0) returned a block");
          b = Block{};
          break;
        }
        if (!p) {
          Refusal(n, 1, errno, ENOMEM);
          Verify(b, b.n, "a refused realloc damaged its block");
          break;
        }
        Block moved{static_cast<unsigned char *>(p), b.n, b.seed};
        Verify(moved, n < b.n ? n : b.n, "realloc lost the block's contents");
        Accept(&b, p, n, 1, seed);
        break;
      }
      case 5: {  // posix_memalign
        if (b.p) break;
        size_t align = Align(&in), n = Size(&in);
        void *p = nullptr;
        int err = hak_posix_memalign(&p, align, n);
        bool bad = !PowerOfTwo(align) || align < sizeof(void *);
        if (err) {
          Refusal(n, align, err, bad ? EINVAL : ENOMEM);
          break;
        }
        FUZZ_CHECK(!bad, "posix_memalign accepted a bad alignment");
        Accept(&b, p, n, align, seed);
        break;
      }
      case 6: {  // aligned_alloc and memalign
        if (b.p) break;
        size_t align = Align(&in), n = Size(&in);
        bool aligned_alloc = in.U8() & 1;
        void *p = aligned_alloc ? hak_aligned_alloc(align, n) : hak_memalign(align, n);
        if (!p) {
          bool bad = aligned_alloc ? !PowerOfTwo(align) : align > SIZE_MAX / 2 + 1;
          Refusal(n, align, errno, bad ? EINVAL : ENOMEM);
          break;
        }
        size_t want = 1;
        while (want < align) want <<= 1;  // memalign rounds a bad alignment up
        Accept(&b, p, n, want, seed);
        break;
      }
      case 7:  // free
        if (!b.p) break;
        Verify(b, b.n, "a block lost its contents before free");
        hak_free(b.p);
        b = Block{};
        break;
      case 8:  // freed by another thread
        if (!b.p) break;
        TheRemote().Give(b);
        b = Block{};
        break;
      case 9: {  // every usable byte is writable
        if (!b.p) break;
        Verify(b, b.n, "a block lost its contents");
        size_t usable = hak_malloc_usable_size(b.p);
        FUZZ_CHECK(usable >= b.n, "usable size shrank");
        if (usable <= (size_t{1} << 20)) memset(b.p, 0x5a, usable);
        Stamp(&b);
        break;
      }
      default: {  // reallocarray, with products that overflow
        if (!b.p) break;
        size_t count = 1 + in.U8() % 8, n = Size(&in), total;
        bool overflow = __builtin_mul_overflow(count, n, &total);
        Verify(b, b.n, "a block lost its contents before reallocarray");
        void *p = hak_reallocarray(b.p, count, n);
        if (overflow || !p) {
          if (!overflow && total == 0) {  // a zero product frees, as realloc(p, 0)
            b = Block{};
            break;
          }
          FUZZ_CHECK(p == nullptr && errno == ENOMEM, "reallocarray refused without ENOMEM");
          if (!overflow) Refusal(total, 1, errno, ENOMEM);
          Verify(b, b.n, "a refused reallocarray damaged its block");
          break;
        }
        Block moved{static_cast<unsigned char *>(p), b.n, b.seed};
        Verify(moved, total < b.n ? total : b.n, "reallocarray lost the block's contents");
        Accept(&b, p, total, 1, seed);
      }
    }
  }
  for (Block &b : slots) {
    if (!b.p) continue;
    Verify(b, b.n, "a block lost its contents before free");
    hak_free(b.p);
  }
  TheRemote().Drain();
  return 0;
}
