// The one error type of parafuse.
//
// Library code throws parafuse::Error (never exit()/abort()); only main() turns an Error into
// an exit code. The message carries file:line of the throw site and, once the process knows
// it, the MPI rank, so a log line from any rank of a 64-rank job says where it came from.
// One check macro per library (CUDA, cuBLAS, NCCL, MPI, UCX) lives next to that library's
// code and funnels into throw_error().
#pragma once

#include <stdexcept>
#include <string>

#include <fmt/format.h>

namespace parafuse {

class Error : public std::runtime_error {
 public:
  Error(std::string what, std::string where) : std::runtime_error(what), where_(std::move(where)) {}
  // "file.cpp:123 [rank 3]"; empty rank part before MPI is up.
  const std::string& where() const { return where_; }

 private:
  std::string where_;
};

// Set once by the launcher after MPI_Init; -1 (the default) means "not known".
void set_error_rank(int rank);

[[noreturn]] void throw_error(const char* file, int line, const std::string& message);

}  // namespace parafuse

#define PF_THROW(...) ::parafuse::throw_error(__FILE__, __LINE__, ::fmt::format(__VA_ARGS__))
#define PF_CHECK(cond, ...)    \
  do {                         \
    if (!(cond)) {             \
      PF_THROW(__VA_ARGS__);   \
    }                          \
  } while (0)
