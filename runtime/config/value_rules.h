// The allowed values of a setting, written once and used wherever the setting can be given:
// in a YAML or JSON file (config_reader.h names the file and line or key path), and as a
// command-line flag (the launcher's validators name the flag). Messages say the range in words,
// "must be at least 1, got '0'", never a limit nobody typed.
#pragma once

#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>

namespace parafuse {

// An integer in [min, max]. describe(): "at least 1", "from 1 to 65535". A max at or above
// INT_MAX is a sanity cap, not a range anybody chose: it is named only when a value hits it.
struct IntRule {
  int64_t min = std::numeric_limits<int64_t>::min();
  int64_t max = std::numeric_limits<int64_t>::max();
  bool accepts(int64_t v) const { return v >= min && v <= max; }
  std::string describe() const;
};

// A finite number with optional bounds, each inclusive or not. describe(): "at least 0",
// "greater than 0", "in (0, 1]".
struct NumberRule {
  std::optional<double> min, max;
  bool min_inclusive = true, max_inclusive = true;
  bool accepts(double v) const;
  std::string describe() const;
};

inline constexpr int64_t kIntMax = std::numeric_limits<int>::max();

// The rules parafuse's settings use.
inline const IntRule kPositiveInt{1, kIntMax};     // tp, pp, max_tokens, batch sizes
inline const IntRule kNonNegativeInt{0, kIntMax};  // threads, top_k (0: off/auto)
inline const IntRule kPositiveInt64{1, std::numeric_limits<int64_t>::max()};
inline const IntRule kNonNegativeInt64{0, std::numeric_limits<int64_t>::max()};
inline const IntRule kPort{1, 65535};        // a port to connect to
inline const IntRule kListenPort{0, 65535};  // serve.port (0: any free port)
inline const NumberRule kNonNegativeNumber{0.0, std::nullopt};      // temperature
inline const NumberRule kPositiveNumber{0.0, std::nullopt, false};  // seconds
inline const NumberRule kProbability{0.0, 1.0, false, true};        // top_p: (0, 1]

// A decimal integer, optional sign, nothing else ("2", "+2", "-1"; not "2.0", "two", "0x2",
// " 2"); nullopt when the text is not one or does not fit int64.
std::optional<int64_t> parse_int(std::string_view text);
// A finite decimal number ("0.7", "1e-3", "60", "+2"); not "inf", "nan", "fast".
std::optional<double> parse_number(std::string_view text);

// Empty when `text` is an integer `rule` accepts, else "must be at least 1, got '0'" (or
// "must be an integer, got 'x'"): what a flag or key validator reports after its name.
std::string int_problem(std::string_view text, const IntRule& rule);
std::string number_problem(std::string_view text, const NumberRule& rule);
// The same, with the value shown as `shown` after "got" instead of quoted: a JSON number as it
// was written ("must be at least 1, got -3").
std::string int_problem(std::string_view text, const IntRule& rule, std::string_view shown);
std::string number_problem(std::string_view text, const NumberRule& rule, std::string_view shown);

}  // namespace parafuse
