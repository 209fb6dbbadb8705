/* The options table and its parser (see options.h). */
#include "allocator/internal/options.h"

#include <stdbool.h>

#include "allocator/internal/log.h"

const hak_option_desc_t hak_option_table[HAK_OPT_COUNT] = {
#define HAK_OPTION_DESC(id, def, lo, hi, help) {"HAKMEM_" #id, def, lo, hi, help},
    HAK_OPTIONS(HAK_OPTION_DESC)
#undef HAK_OPTION_DESC
};

int64_t hak_option_values[HAK_OPT_COUNT] = {
#define HAK_OPTION_DEF(id, def, lo, hi, help) def,
    HAK_OPTIONS(HAK_OPTION_DEF)
#undef HAK_OPTION_DEF
};

/* Decimal digits only, no sign, no spaces: anything else is a typo worth a warning. */
static bool parse_decimal(const char *s, int64_t *out) {
  int64_t v = 0;
  if (*s == '\0') return false;
  for (; *s; s++) {
    if (*s < '0' || *s > '9') return false;
    if (v > (INT64_MAX - 9) / 10) return false;
    v = v * 10 + (*s - '0');
  }
  *out = v;
  return true;
}

static void warn_bad(const hak_option_desc_t *d, const char *text, int fd) {
  char line[256];
  hak_buf_t b = {line, 0, sizeof line - 1};
  hak_buf_str(&b, "hakmem: ");
  hak_buf_str(&b, d->name);
  hak_buf_str(&b, "=");
  hak_buf_str(&b, text);
  hak_buf_str(&b, " is not a number in ");
  hak_buf_i64(&b, d->min);
  hak_buf_str(&b, "..");
  hak_buf_i64(&b, d->max);
  hak_buf_str(&b, "; using the default ");
  hak_buf_i64(&b, d->def);
  b.data[b.len++] = '\n';
  hak_buf_flush(&b, fd);
}

void hak_options_load(const char *(*get)(const char *name), int warn_fd) {
  for (int i = 0; i < HAK_OPT_COUNT; i++) {
    const hak_option_desc_t *d = &hak_option_table[i];
    const char *text = get(d->name);
    int64_t v;
    hak_option_values[i] = d->def;
    if (text == NULL) continue;
    if (parse_decimal(text, &v) && v >= d->min && v <= d->max) {
      hak_option_values[i] = v;
    } else {
      warn_bad(d, text, warn_fd);
    }
  }
}

void hak_options_print(int fd) {
  char text[4096];
  hak_buf_t b = {text, 0, sizeof text};
  hak_buf_str(&b, "hakmem variant " HAK_VARIANT_NAME " (" HAK_VARIANT_FLAGS ")\n");
  hak_buf_str(&b, "option                               value    default  range        help\n");
  for (int i = 0; i < HAK_OPT_COUNT; i++) {
    const hak_option_desc_t *d = &hak_option_table[i];
    size_t start = b.len;
    hak_buf_str(&b, d->name);
    while (b.len < start + 35) hak_buf_str(&b, " ");
    hak_buf_u64_width(&b, (uint64_t)hak_option_values[i], 8);
    hak_buf_u64_width(&b, (uint64_t)d->def, 9);
    hak_buf_str(&b, "  ");
    start = b.len;
    hak_buf_i64(&b, d->min);
    hak_buf_str(&b, "..");
    hak_buf_i64(&b, d->max);
    while (b.len < start + 13) hak_buf_str(&b, " ");
    hak_buf_str(&b, d->help);
    hak_buf_str(&b, "\n");
  }
  hak_buf_flush(&b, fd);
}
