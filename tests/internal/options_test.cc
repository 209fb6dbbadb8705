// The options table: defaults, accepted values, and one warning line per bad value.
#include "allocator/internal/options.h"

#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <map>
#include <string>

#include "gtest/gtest.h"

namespace {

std::map<std::string, std::string> *g_env;

const char *FakeGetenv(const char *name) {
  auto it = g_env->find(name);
  return it == g_env->end() ? nullptr : it->second.c_str();
}

// Loads the options from `env` and returns what was written as warnings.
std::string Load(std::map<std::string, std::string> env) {
  g_env = &env;
  FILE *f = tmpfile();
  hak_options_load(FakeGetenv, fileno(f));
  std::string text(4096, '\0');
  rewind(f);
  text.resize(fread(&text[0], 1, text.size(), f));
  fclose(f);
  g_env = nullptr;
  return text;
}

int CountLines(const std::string &s) {
  int n = 0;
  for (char c : s) n += c == '\n';
  return n;
}

TEST(InternalOptionsTest, DefaultsWhenUnset) {
  EXPECT_EQ(Load({}), "");
  for (int i = 0; i < HAK_OPT_COUNT; i++) {
    EXPECT_EQ(hak_opt(static_cast<hak_option_t>(i)), hak_option_table[i].def)
        << hak_option_table[i].name;
  }
}

TEST(InternalOptionsTest, EveryNameHasThePrefixAndARange) {
  for (int i = 0; i < HAK_OPT_COUNT; i++) {
    const hak_option_desc_t &d = hak_option_table[i];
    EXPECT_EQ(std::strncmp(d.name, "HAKMEM_", 7), 0) << d.name;
    EXPECT_LE(d.min, d.def) << d.name;
    EXPECT_LE(d.def, d.max) << d.name;
    EXPECT_GT(std::strlen(d.help), 10u) << d.name;
  }
}

TEST(InternalOptionsTest, AcceptsValuesInRangeIncludingTheBounds) {
  EXPECT_EQ(Load({{"HAKMEM_DECAY_MS", "250"},
                  {"HAKMEM_BIGCACHE_MB", "0"},
                  {"HAKMEM_POOL_TLS_ARENA_MB_MAX", "1024"}}),
            "");
  EXPECT_EQ(hak_opt(HAK_OPT_DECAY_MS), 250);
  EXPECT_EQ(hak_opt(HAK_OPT_BIGCACHE_MB), 0);
  EXPECT_EQ(hak_opt(HAK_OPT_POOL_TLS_ARENA_MB_MAX), 1024);
}

TEST(InternalOptionsTest, BadValueKeepsTheDefaultWithOneWarningLine) {
  struct Case {
    const char *value;
  } cases[] = {{"abc"}, {""}, {"-1"}, {"12x"}, {" 5"}, {"99999999999999999999999"}};
  for (const Case &c : cases) {
    std::string warnings = Load({{"HAKMEM_DECAY_MS", c.value}});
    EXPECT_EQ(hak_opt(HAK_OPT_DECAY_MS), hak_option_table[HAK_OPT_DECAY_MS].def) << c.value;
    EXPECT_EQ(CountLines(warnings), 1) << warnings;
    EXPECT_NE(warnings.find("HAKMEM_DECAY_MS"), std::string::npos) << warnings;
    EXPECT_NE(warnings.find("using the default 1000"), std::string::npos) << warnings;
  }
}

TEST(InternalOptionsTest, OutOfRangeValuesAreRejected) {
  std::string warnings = Load({{"HAKMEM_TINY_CACHE_MAX", "15"}, {"HAKMEM_STATS", "2"}});
  EXPECT_EQ(CountLines(warnings), 2) << warnings;
  EXPECT_EQ(hak_opt(HAK_OPT_TINY_CACHE_MAX), 2048);
  EXPECT_EQ(hak_opt(HAK_OPT_STATS), 0);
  EXPECT_NE(warnings.find("HAKMEM_TINY_CACHE_MAX=15 is not a number in 16..2048"),
            std::string::npos)
      << warnings;
}

TEST(InternalOptionsTest, PrintShowsEveryOptionAndTheVariant) {
  Load({{"HAKMEM_SS_LRU_SIZE", "7"}});
  FILE *f = tmpfile();
  hak_options_print(fileno(f));
  std::string text(8192, '\0');
  rewind(f);
  text.resize(fread(&text[0], 1, text.size(), f));
  fclose(f);
  EXPECT_NE(text.find(HAK_VARIANT_NAME), std::string::npos) << text;
  for (int i = 0; i < HAK_OPT_COUNT; i++) {
    EXPECT_NE(text.find(hak_option_table[i].name), std::string::npos) << text;
  }
  size_t line = text.find("HAKMEM_SS_LRU_SIZE");
  ASSERT_NE(line, std::string::npos);
  EXPECT_NE(text.substr(line, 50).find(" 7 "), std::string::npos) << text.substr(line, 80);
}

}  // namespace
