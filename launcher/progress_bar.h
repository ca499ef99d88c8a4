// A load progress bar on stderr: redrawn in place on a terminal, a line per 25% otherwise (so
// Slurm logs stay readable).
#pragma once

#include <chrono>
#include <cstddef>
#include <string>

namespace parafuse {

// What update()'s counts are: bytes (shown as MiB) or items of a named kind ("requests").
struct ProgressUnit {
  std::string items;  // empty: bytes
};

class ProgressBar {
 public:
  explicit ProgressBar(std::string label, bool enabled = true, ProgressUnit unit = {});
  void update(size_t done, size_t total);
  // On a terminal, erases the bar so a line can be printed; the next update() redraws it.
  void clear();
  void finish();

 private:
  std::string label_;
  bool enabled_;
  ProgressUnit unit_;
  bool tty_;
  int last_quarter_ = -1;
  int last_permille_ = -1;
  bool finished_ = false;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace parafuse
