// What hakmem tells about itself: malloc_stats() prints the counters hak_stats_get
// returns, and the trace variant's free-route log (HAKMEM_FREE_ROUTE_TRACE=1) names the
// route of each free, checked line by line against a script whose routes are known.
#include <fcntl.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "allocator/hakmem.h"
#include "allocator/internal/config.h"
#include "gtest/gtest.h"
#include "tests/system/test_util.h"

namespace {

using hak_test::InChild;
using hak_test::RunSelf;
using hak_test::Stats;

void *volatile g_sink;

// Runs f with stderr sent to a temporary file and returns what was written there.
template <typename F>
std::string CaptureStderr(F f) {
  char path[] = "/tmp/hakmem_introspection_XXXXXX";
  int fd = mkstemp(path);
  if (fd < 0) return "";
  unlink(path);
  fflush(stderr);
  int saved = dup(2);
  dup2(fd, 2);
  f();
  fflush(stderr);
  dup2(saved, 2);
  close(saved);
  std::string text;
  char buf[4096];
  lseek(fd, 0, SEEK_SET);
  for (ssize_t n; (n = read(fd, buf, sizeof buf)) > 0;) text.append(buf, static_cast<size_t>(n));
  close(fd);
  return text;
}

// The value printed on the line "  <label> <value>", or -1 when there is none.
long long Counter(const std::string &text, const std::string &label) {
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    std::string head = "  " + label + " ";
    if (line.compare(0, head.size(), head) == 0) return atoll(line.c_str() + head.size());
  }
  return -1;
}

TEST(SystemIntrospectionTest, MallocStatsPrintsTheCountersOfHakStats) {
  std::vector<void *> blocks;
  for (int i = 0; i < 3; i++) blocks.push_back(malloc(size_t{1} << 20));  // Large, live
  hak_stats_t s = Stats();
  std::string text = CaptureStderr([] { malloc_stats(); });
  hak_stats_t t = Stats();
  for (void *p : blocks) free(p);

  std::string header = "hakmem stats of pid " + std::to_string(getpid()) + " ";
  ASSERT_EQ(text.compare(0, header.size(), header), 0) << text;
  EXPECT_NE(text.find("(" + std::string(HAK_VARIANT_NAME) + ", HEADER_CLASSIDX="),
            std::string::npos)
      << text;
  // Counters that do not move while nothing allocates, printed as hak_stats_get says.
  EXPECT_EQ(Counter(text, "large live blocks"), static_cast<long long>(s.large_live_blocks));
  EXPECT_EQ(s.large_live_blocks, t.large_live_blocks);
  EXPECT_GE(s.large_live_blocks, 3u);
  EXPECT_EQ(Counter(text, "large live bytes"), static_cast<long long>(s.large_live_bytes));
  EXPECT_EQ(Counter(text, "claimed bytes"), static_cast<long long>(s.reserved_bytes));
  EXPECT_EQ(Counter(text, "tiny superslabs"), static_cast<long long>(s.tiny_superslabs));
  // Every counter of the table has its line.
#define HAK_EXPECT_LINE(field, label, what) \
  EXPECT_GE(Counter(text, label), 0) << "no line for " << label;
  HAK_STATS_COUNTERS(HAK_EXPECT_LINE)
#undef HAK_EXPECT_LINE
  EXPECT_NE(text.find("  memory system calls reserve="), std::string::npos) << text;
}

// The scripted frees: the address and the route each must take.
struct Expected {
  void *p;
  const char *route;
};

std::vector<Expected> ScriptedFrees() {
  std::vector<Expected> script;
  // A fresh thread, so that its caches and slabs are its own: its frees are local.
  std::thread([&] {
    void *tiny = malloc(64);
    void *pool = malloc(5000);
    void *large = malloc(size_t{1} << 20);
    free(tiny);
    script.push_back({tiny, "tiny fast"});
    free(pool);
    script.push_back({pool, "pool fast"});
    free(large);
    script.push_back({large, "bigcache"});
  }).join();
  // Blocks of a live thread freed here: remote frees.
  void *tiny = nullptr, *pool = nullptr;
  bool done = false;
  std::thread owner([&] {
    tiny = malloc(96);
    pool = malloc(9000);
    __atomic_store_n(&done, true, __ATOMIC_RELEASE);
    while (__atomic_load_n(&done, __ATOMIC_ACQUIRE)) usleep(1000);
  });
  while (!__atomic_load_n(&done, __ATOMIC_ACQUIRE)) usleep(1000);
  free(tiny);
  script.push_back({tiny, "tiny remote"});
  free(pool);
  script.push_back({pool, "pool remote"});
  __atomic_store_n(&done, false, __ATOMIC_RELEASE);
  owner.join();
  if (HAK_RELEASE) {  // the debug build aborts on it
    static char not_ours[64];
    g_sink = not_ours;
    free(g_sink);
    script.push_back({not_ours, "foreign free"});
  }
  return script;
}

std::string Hex(const void *p) {
  char buf[32];
  snprintf(buf, sizeof buf, "0x%lx", static_cast<unsigned long>(reinterpret_cast<uintptr_t>(p)));
  return buf;
}

// The child runs the script with the log on; the parent only starts it (the option is
// read at start-up): each scripted free's line, with its route, in the script's order.
TEST(SystemIntrospectionTest, TheRouteLogNamesTheRouteOfEachFree) {
  if (InChild()) {
    std::vector<Expected> script;
    std::string log = CaptureStderr([&] { script = ScriptedFrees(); });
    std::vector<std::string> want;
    for (const Expected &e : script) want.push_back("hakmem: free " + Hex(e.p) + " -> " + e.route);
    // The script's lines must come in its order; lines of other frees (the thread
    // library's, which may free an address the script freed before) come between.
    size_t found = 0;
    std::istringstream in(log);
    for (std::string line; std::getline(in, line) && found < want.size();) {
      if (line == want[found]) found++;
    }
    bool traced = HAK_TRACE != 0;
    if (traced ? found != want.size() : !log.empty()) {
      fprintf(stdout, "log:\n%s\nwanted:\n", log.c_str());
      for (const std::string &w : want) fprintf(stdout, "%s\n", w.c_str());
      fflush(stdout);
      _exit(3);
    }
    _exit(0);
  }
  int status = RunSelf("SystemIntrospectionTest.TheRouteLogNamesTheRouteOfEachFree", 0,
                       {{"HAKMEM_FREE_ROUTE_TRACE", "1"}});
  ASSERT_TRUE(WIFEXITED(status)) << "status " << status;
  EXPECT_EQ(WEXITSTATUS(status), 0)
      << (HAK_TRACE ? "the log differs from the script (printed above)"
                    : "only the trace variant logs routes");
}

}  // namespace
