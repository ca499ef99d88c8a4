#include "kernels/core/error.h"

#include <atomic>
#include <cstring>

namespace parafuse {
namespace {
std::atomic<int> g_rank{-1};
}

void set_error_rank(int rank) { g_rank.store(rank); }

void throw_error(const char* file, int line, const std::string& message) {
  const char* base = std::strrchr(file, '/');
  std::string where = fmt::format("{}:{}", base ? base + 1 : file, line);
  if (g_rank.load() >= 0) where += fmt::format(" [rank {}]", g_rank.load());
  throw Error(message, where);
}

}  // namespace parafuse
