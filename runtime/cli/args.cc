// SPDX-License-Identifier: Apache-2.0
// Command-line parsing for siflow's subcommands. Never prints or exits: every problem is a
// UsageError naming the argument, reported by main() with exit code 2.
#include "args.hpp"

#include <cerrno>
#include <cmath>
#include <cstdlib>

#include "errors.hpp"

namespace siflow::cli {

ParsedArgs::ParsedArgs(const std::vector<OptionSpec>& specs,
                       const std::vector<const char*>& positionals,
                       const std::vector<std::string>& argv)
    : specs_(specs) {
  bool options_done = false;
  for (size_t i = 0; i < argv.size(); ++i) {
    const std::string& arg = argv[i];
    if (options_done || arg.size() < 2 || arg[0] != '-') {
      if (positionals_.size() == positionals.size())
        throw UsageError(format("unexpected argument '%s'", arg.c_str()));
      positionals_.push_back(arg);
      continue;
    }
    if (arg == "--") {
      options_done = true;
      continue;
    }
    const size_t eq = arg.rfind("--", 0) == 0 ? arg.find('=') : std::string::npos;
    const std::string key = arg.substr(0, eq);
    const OptionSpec* spec = nullptr;
    for (const OptionSpec& s : specs_)
      if (key == s.name || (s.short_name && key == s.short_name)) spec = &s;
    if (!spec) throw UsageError(format("unknown option '%s'", key.c_str()));
    std::string value;
    if (eq != std::string::npos) {
      value = arg.substr(eq + 1);
    } else if (i + 1 < argv.size()) {
      value = argv[++i];
    } else {
      throw UsageError(format("option '%s' needs a value (%s)", key.c_str(), spec->value));
    }
    if (!values_.emplace(spec->name, value).second)
      throw UsageError(format("option '%s' is given more than once", spec->name));
  }
  if (positionals_.size() < positionals.size())
    throw UsageError(format("missing %s", positionals[positionals_.size()]));
}

const std::string* ParsedArgs::find(const char* name) const {
  const auto it = values_.find(name);
  return it == values_.end() ? nullptr : &it->second;
}

const std::string& ParsedArgs::required(const char* name) const {
  if (const std::string* v = find(name)) return *v;
  for (const OptionSpec& s : specs_)
    if (std::string(name) == s.name)
      throw UsageError(
          format("missing required option %s %s", s.short_name ? s.short_name : s.name, s.value));
  throw UsageError(format("missing required option %s", name));
}

bool wants_help(const std::vector<std::string>& argv) {
  for (const std::string& arg : argv) {
    if (arg == "--") return false;
    if (arg == "-h" || arg == "--help") return true;
  }
  return false;
}

uint64_t parse_uint(const char* option, const std::string& text, uint64_t min, uint64_t max) {
  const char* begin = text.c_str();
  char* end = nullptr;
  errno = 0;
  const unsigned long long v = std::strtoull(begin, &end, 10);
  if (text.empty() || !(*begin >= '0' && *begin <= '9') || *end != '\0')
    throw UsageError(format("%s: '%s' is not a non-negative integer", option, text.c_str()));
  if (errno == ERANGE || v < min || v > max)
    throw UsageError(format("%s: %s is outside [%llu, %llu]", option, text.c_str(),
                            static_cast<unsigned long long>(min),
                            static_cast<unsigned long long>(max)));
  return v;
}

bool try_parse_double(const std::string& text, double* out) {
  const char* begin = text.c_str();
  char* end = nullptr;
  const double v = std::strtod(begin, &end);
  if (text.empty() || end == begin || *end != '\0' || !std::isfinite(v)) return false;
  *out = v;
  return true;
}

double parse_double(const char* option, const std::string& text) {
  double v = 0.0;
  if (!try_parse_double(text, &v))
    throw UsageError(format("%s: '%s' is not a finite number", option, text.c_str()));
  return v;
}

}  // namespace siflow::cli
