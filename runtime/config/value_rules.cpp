#include "runtime/config/value_rules.h"

#include <charconv>
#include <cmath>

#include <fmt/format.h>

namespace parafuse {

std::string IntRule::describe() const {
  constexpr int64_t kLowest = std::numeric_limits<int64_t>::min();
  if (max >= kIntMax) return fmt::format("at least {}", min);
  if (min == kLowest) return fmt::format("at most {}", max);
  return fmt::format("from {} to {}", min, max);
}

bool NumberRule::accepts(double v) const {
  if (!std::isfinite(v)) return false;
  if (min && (min_inclusive ? v < *min : v <= *min)) return false;
  if (max && (max_inclusive ? v > *max : v >= *max)) return false;
  return true;
}

std::string NumberRule::describe() const {
  if (min && max)
    return fmt::format("in {}{}, {}{}", min_inclusive ? "[" : "(", *min, *max,
                       max_inclusive ? "]" : ")");
  if (min) return fmt::format("{} {}", min_inclusive ? "at least" : "greater than", *min);
  if (max) return fmt::format("{} {}", max_inclusive ? "at most" : "less than", *max);
  return "a finite number";
}

std::optional<int64_t> parse_int(std::string_view text) {
  if (!text.empty() && text.front() == '+') text.remove_prefix(1);
  if (text.empty() || text.front() == '+') return std::nullopt;
  int64_t v = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return v;
}

std::optional<double> parse_number(std::string_view text) {
  if (!text.empty() && text.front() == '+') text.remove_prefix(1);
  if (text.empty() || text.front() == '+') return std::nullopt;
  double v = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || end != text.data() + text.size() || !std::isfinite(v))
    return std::nullopt;
  return v;
}

namespace {

// At most 40 characters of what was typed, for "got '...'".
std::string clipped(std::string_view text) {
  return text.size() <= 40 ? std::string(text) : std::string(text.substr(0, 37)) + "...";
}

}  // namespace

std::string int_problem(std::string_view text, const IntRule& rule) {
  return int_problem(text, rule, fmt::format("'{}'", clipped(text)));
}

std::string int_problem(std::string_view text, const IntRule& rule, std::string_view shown) {
  const auto v = parse_int(text);
  // Digits too many for int64 are still "an integer": say the range, not "not an integer".
  const size_t digits = text.find_first_not_of("+-");
  const bool integer_text = digits != std::string_view::npos &&
                            text.find_first_not_of("0123456789", digits) == std::string_view::npos;
  if (!v && !integer_text)
    return fmt::format("must be an integer ({}), got {}", rule.describe(), shown);
  const bool negative = text.find('-') != std::string_view::npos;
  const bool too_large = v ? *v > rule.max : !negative;
  const bool open_ended = rule.max >= kIntMax;
  if (too_large && open_ended)  // "at least 1" is what people need; the cap only when hit
    return fmt::format("must be at most {}, got {}", rule.max, shown);
  if (!v || !rule.accepts(*v)) return fmt::format("must be {}, got {}", rule.describe(), shown);
  return {};
}

std::string number_problem(std::string_view text, const NumberRule& rule) {
  return number_problem(text, rule, fmt::format("'{}'", clipped(text)));
}

std::string number_problem(std::string_view text, const NumberRule& rule, std::string_view shown) {
  const auto v = parse_number(text);
  if (!v && !rule.min && !rule.max) return fmt::format("must be a number, got {}", shown);
  if (!v) return fmt::format("must be a number ({}), got {}", rule.describe(), shown);
  if (!rule.accepts(*v)) return fmt::format("must be {}, got {}", rule.describe(), shown);
  return {};
}

}  // namespace parafuse
