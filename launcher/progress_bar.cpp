#include "launcher/progress_bar.h"

#include <unistd.h>

#include <cstdio>

#include <fmt/format.h>

namespace parafuse {

ProgressBar::ProgressBar(std::string label, bool enabled, ProgressUnit unit)
    : label_(std::move(label)),
      enabled_(enabled),
      unit_(std::move(unit)),
      tty_(isatty(STDERR_FILENO) != 0),
      start_(std::chrono::steady_clock::now()) {}

void ProgressBar::update(size_t done, size_t total) {
  if (!enabled_ || total == 0 || finished_) return;
  const double frac = double(done) / double(total);
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const std::string amount = unit_.items.empty()
                                 ? fmt::format("{:.1f} MiB", double(done) / (1 << 20))
                                 : fmt::format("{}/{} {}", done, total, unit_.items);
  if (tty_) {
    const int permille = int(frac * 1000);
    if (permille == last_permille_) return;
    last_permille_ = permille;
    constexpr int kWidth = 30;
    const int fill = int(frac * kWidth);
    std::string bar(size_t(fill), '=');
    if (fill < kWidth) bar += '>';
    bar.resize(kWidth, ' ');
    fmt::print(stderr, "\r{} [{}] {:5.1f}% {:>12} {:5.1f}s", label_, bar, frac * 100, amount, secs);
  } else {
    const int quarter = int(frac * 4);
    if (quarter == last_quarter_) return;
    last_quarter_ = quarter;
    fmt::print(stderr, "{}: {:3.0f}% ({}, {:.1f}s)\n", label_, frac * 100, amount, secs);
  }
  std::fflush(stderr);
}

void ProgressBar::clear() {
  if (!enabled_ || finished_ || !tty_ || last_permille_ < 0) return;
  fmt::print(stderr, "\r\033[K");
  std::fflush(stderr);
  last_permille_ = -1;
}

void ProgressBar::finish() {
  if (!enabled_ || finished_) return;
  finished_ = true;
  if (tty_) fmt::print(stderr, "\n");
}

}  // namespace parafuse
