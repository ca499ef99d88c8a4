// A load progress bar on stderr: redrawn in place on a terminal, a line per 25% otherwise (so
// Slurm logs stay readable).
#pragma once

#include <chrono>
#include <cstddef>
#include <string>

namespace parafuse {

class ProgressBar {
 public:
  explicit ProgressBar(std::string label, bool enabled = true);
  void update(size_t done, size_t total);
  void finish();

 private:
  std::string label_;
  bool enabled_;
  bool tty_;
  int last_quarter_ = -1;
  int last_permille_ = -1;
  bool finished_ = false;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace parafuse
