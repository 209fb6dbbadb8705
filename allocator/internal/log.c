/* Non-allocating formatting and the fail-fast handler (see log.h). */
#include "allocator/internal/log.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "allocator/internal/config.h"

static void buf_putc(hak_buf_t *b, char c) {
  if (b->len < b->cap) b->data[b->len++] = c;
}

void hak_buf_str(hak_buf_t *b, const char *s) {
  while (*s) buf_putc(b, *s++);
}

void hak_buf_u64_width(hak_buf_t *b, uint64_t v, unsigned width) {
  char digits[24];
  unsigned n = 0;
  do {
    digits[n++] = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  while (width > n) {
    buf_putc(b, ' ');
    width--;
  }
  while (n) buf_putc(b, digits[--n]);
}

void hak_buf_u64(hak_buf_t *b, uint64_t v) { hak_buf_u64_width(b, v, 0); }

void hak_buf_i64(hak_buf_t *b, int64_t v) {
  if (v < 0) {
    buf_putc(b, '-');
    hak_buf_u64(b, (uint64_t)0 - (uint64_t)v);
    return;
  }
  hak_buf_u64(b, (uint64_t)v);
}

void hak_buf_hex(hak_buf_t *b, uintptr_t v) {
  char digits[2 * sizeof v];
  unsigned n = 0;
  do {
    digits[n++] = "0123456789abcdef"[v & 15];
    v >>= 4;
  } while (v);
  hak_buf_str(b, "0x");
  while (n) buf_putc(b, digits[--n]);
}

void hak_buf_flush(hak_buf_t *b, int fd) {
  size_t off = 0;
  int saved = errno; /* diagnostics must not change what the caller sees in errno */
  while (off < b->len) {
    ssize_t n = write(fd, b->data + off, b->len - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    off += (size_t)n;
  }
  b->len = 0;
  errno = saved;
}

void hak_fatal(const char *what, const void *ptr, const char *where) {
  char text[256];
  hak_buf_t b = {text, 0, sizeof text};
  hak_buf_str(&b, "hakmem: ");
  hak_buf_str(&b, what);
  hak_buf_str(&b, " ");
  hak_buf_hex(&b, (uintptr_t)ptr);
  if (where) {
    hak_buf_str(&b, " (");
    hak_buf_str(&b, where);
    hak_buf_str(&b, ")");
  }
  /* Leave room for the newline even when the text was cut. */
  if (b.len == b.cap) b.len--;
  b.data[b.len++] = '\n';
  hak_buf_flush(&b, 2);
  abort();
}

const char *hak_class_where(char *buf, size_t cap, const char *tier, unsigned cls) {
  hak_buf_t b = {buf, 0, cap - 1};
  hak_buf_str(&b, tier);
  hak_buf_str(&b, " class ");
  hak_buf_u64(&b, cls);
  buf[b.len] = '\0';
  return buf;
}

HAK_NO_ASAN int hak_bytes_are(const void *p, size_t from, size_t to, int value) {
  const unsigned char *c = p;
  for (size_t i = from; i < to; i++) {
    if (c[i] != value) return 0;
  }
  return 1;
}

HAK_NO_ASAN void hak_fill_bytes(void *p, int value, size_t n) {
  if (!HAK_ASAN) {
    memset(p, value, n);
    return;
  }
  /* ASan intercepts memset and checks the range: bytes one at a time, through a volatile
   * pointer so that the loop is not turned back into a call to memset. */
  volatile unsigned char *c = p;
  for (size_t i = 0; i < n; i++) c[i] = (unsigned char)value;
}
