#include "sagemaker/hyperparameters.h"

#include <cctype>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <optional>

#include "util/error.h"
#include "util/json_file.h"
#include "util/strings.h"

namespace medseg {
namespace {

// Recursive-descent parser for the Python literals that str() of SageMaker Python SDK values
// produces: None, True, False, numbers, quoted strings, lists, tuples and dicts.
class PythonLiteralParser {
 public:
  explicit PythonLiteralParser(const std::string& text) : text_(text) {}

  std::optional<nlohmann::json> parse() {
    std::optional<nlohmann::json> value = parse_value();
    skip_space();
    if (!value || pos_ != text_.size()) return std::nullopt;
    return value;
  }

 private:
  void skip_space() {
    while (pos_ < text_.size() && std::isspace(static_cast<unsigned char>(text_[pos_]))) ++pos_;
  }

  bool consume(char c) {
    skip_space();
    if (pos_ < text_.size() && text_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }

  bool consume_word(const std::string& word) {
    if (text_.compare(pos_, word.size(), word) != 0) return false;
    const size_t end = pos_ + word.size();
    if (end < text_.size() &&
        (std::isalnum(static_cast<unsigned char>(text_[end])) || text_[end] == '_')) {
      return false;
    }
    pos_ = end;
    return true;
  }

  std::optional<nlohmann::json> parse_value() {
    if (++depth_ > 64) return std::nullopt;
    skip_space();
    std::optional<nlohmann::json> value;
    if (pos_ >= text_.size()) {
      value = std::nullopt;
    } else if (text_[pos_] == '[') {
      value = parse_sequence('[', ']');
    } else if (text_[pos_] == '(') {
      value = parse_sequence('(', ')');
    } else if (text_[pos_] == '{') {
      value = parse_dict();
    } else if (text_[pos_] == '\'' || text_[pos_] == '"') {
      value = parse_string();
    } else if (consume_word("None")) {
      value = nlohmann::json(nullptr);
    } else if (consume_word("True")) {
      value = nlohmann::json(true);
    } else if (consume_word("False")) {
      value = nlohmann::json(false);
    } else {
      value = parse_number();
    }
    --depth_;
    return value;
  }

  std::optional<nlohmann::json> parse_sequence(char open, char close) {
    consume(open);
    nlohmann::json array = nlohmann::json::array();
    if (consume(close)) return array;
    while (true) {
      std::optional<nlohmann::json> element = parse_value();
      if (!element) return std::nullopt;
      array.push_back(std::move(*element));
      if (consume(close)) return array;
      if (!consume(',')) return std::nullopt;
      if (consume(close)) return array;  // trailing comma, as in "(1,)"
    }
  }

  std::optional<nlohmann::json> parse_dict() {
    consume('{');
    nlohmann::json object = nlohmann::json::object();
    if (consume('}')) return object;
    while (true) {
      std::optional<nlohmann::json> key = parse_value();
      if (!key || !consume(':')) return std::nullopt;
      std::optional<nlohmann::json> value = parse_value();
      if (!value) return std::nullopt;
      object[key->is_string() ? key->get<std::string>() : key->dump()] = std::move(*value);
      if (consume('}')) return object;
      if (!consume(',')) return std::nullopt;
      if (consume('}')) return object;
    }
  }

  std::optional<nlohmann::json> parse_string() {
    const char quote = text_[pos_++];
    std::string value;
    while (pos_ < text_.size() && text_[pos_] != quote) {
      char c = text_[pos_++];
      if (c == '\\' && pos_ < text_.size()) {
        const char escaped = text_[pos_++];
        switch (escaped) {
          case 'n':
            c = '\n';
            break;
          case 't':
            c = '\t';
            break;
          case 'r':
            c = '\r';
            break;
          case '0':
            c = '\0';
            break;
          default:
            c = escaped;  // \\, \', \"
        }
      }
      value += c;
    }
    if (pos_ >= text_.size()) return std::nullopt;
    ++pos_;  // closing quote
    return nlohmann::json(value);
  }

  std::optional<nlohmann::json> parse_number() {
    const size_t start = pos_;
    while (pos_ < text_.size() &&
           (std::isalnum(static_cast<unsigned char>(text_[pos_])) || text_[pos_] == '.' ||
            text_[pos_] == '-' || text_[pos_] == '+' || text_[pos_] == '_')) {
      ++pos_;
    }
    std::string token = text_.substr(start, pos_ - start);
    if (token.empty()) return std::nullopt;
    std::string digits;
    for (char c : token) {
      if (c != '_') digits += c;  // Python allows 1_000
    }
    char* end = nullptr;
    const long long as_integer = std::strtoll(digits.c_str(), &end, 10);
    if (*end == '\0') return nlohmann::json(as_integer);
    const double as_double = std::strtod(digits.c_str(), &end);
    if (*end == '\0' && std::isfinite(as_double)) return nlohmann::json(as_double);
    return std::nullopt;
  }

  const std::string& text_;
  size_t pos_ = 0;
  int depth_ = 0;
};

}  // namespace

nlohmann::json decode_hyperparameter_value(const std::string& text) {
  const std::string trimmed = trim(text);
  // Nested deeper than any configuration value: kept as text (the key's type check names it).
  if (!trimmed.empty() && nesting_depth(trimmed) <= kMaxJsonDepth) {
    nlohmann::json as_json;
    try {
      as_json = nlohmann::json::parse(trimmed, nullptr, /*allow_exceptions=*/false);
    } catch (const nlohmann::json::exception&) {
      as_json = nlohmann::json(nlohmann::json::value_t::discarded);
    }
    if (!as_json.is_discarded()) return as_json;
    if (std::optional<nlohmann::json> literal = PythonLiteralParser(trimmed).parse()) {
      return *literal;
    }
  }
  return nlohmann::json(text);
}

bool is_sagemaker_reserved_key(const std::string& key) {
  return starts_with(key, "sagemaker_") || key == "_tuning_objective_metric";
}

std::string read_command_hyperparameter(const std::string& path) {
  const nlohmann::json document = read_json_file(path, /*required=*/false);
  if (!document.is_object() || !document.contains(kCommandHyperparameter)) return "";
  const nlohmann::json& value = document[kCommandHyperparameter];
  const nlohmann::json decoded =
      value.is_string() ? decode_hyperparameter_value(value.get<std::string>()) : value;
  if (!decoded.is_string()) {
    throw ClientError(path + ": " + kCommandHyperparameter + " = " + value.dump() +
                      ": expected a medseg command name (train, preprocess or infer)");
  }
  return trim(decoded.get<std::string>());
}

std::vector<Hyperparameter> read_hyperparameters(const std::string& path) {
  const nlohmann::json document = read_json_file(path, /*required=*/false);
  std::vector<Hyperparameter> hyperparameters;
  std::error_code error;
  if (document.is_null() && !std::filesystem::exists(path, error)) return hyperparameters;
  if (!document.is_object()) {
    throw ClientError(path + ": expected a JSON object of hyperparameter names to values, got " +
                      std::string(document.type_name()));
  }
  for (const auto& [key, value] : document.items()) {
    if (is_sagemaker_reserved_key(key) || key == kCommandHyperparameter) continue;
    Hyperparameter hyperparameter;
    hyperparameter.key = key;
    if (value.is_string()) {
      hyperparameter.raw = value.get<std::string>();
      hyperparameter.value = decode_hyperparameter_value(hyperparameter.raw);
    } else {
      hyperparameter.raw = value.dump();
      hyperparameter.value = value;
    }
    hyperparameters.push_back(std::move(hyperparameter));
  }
  return hyperparameters;
}

}  // namespace medseg
