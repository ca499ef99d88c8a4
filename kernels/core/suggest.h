// "Did you mean ...?" for names a person typed: a config key, a subcommand, a backend or a
// transport. One rule everywhere: the closest known name by edit distance, if it is within one
// typo for short names and two for longer ones ("tpp" -> "tp", "genrate" -> "generate").
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace parafuse {

// Edit distance: insertions, deletions, substitutions and swaps of two neighbours.
size_t edit_distance(std::string_view a, std::string_view b);

// The closest of `known` to `typed`, or "" when none is close enough (or `typed` is empty).
std::string closest_match(std::string_view typed, const std::vector<std::string>& known);

// " (did you mean 'generate'?)" or "" — ready to append to a message.
std::string did_you_mean(std::string_view typed, const std::vector<std::string>& known);

}  // namespace parafuse
