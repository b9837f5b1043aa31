// Small string helpers shared by the config and contract parsers.
#pragma once

#include <string>
#include <vector>

namespace medseg {

// Levenshtein distance; used to suggest the closest valid key for a misspelt one.
int edit_distance(const std::string& a, const std::string& b);

// The candidate closest to `word` (by edit distance, ties broken by order), or "" when
// `candidates` is empty or nothing is within half of `word`'s length plus two edits.
std::string closest_match(const std::string& word, const std::vector<std::string>& candidates);

std::string trim(const std::string& text);

bool starts_with(const std::string& text, const std::string& prefix);

bool ends_with(const std::string& text, const std::string& suffix);

// Joins with a separator: join({"a","b"}, ", ") == "a, b".
std::string join(const std::vector<std::string>& parts, const std::string& separator);

// Shortens text to at most max_chars, marking the cut with "...".
std::string truncate_text(const std::string& text, size_t max_chars);

}  // namespace medseg
