// SPDX-License-Identifier: Apache-2.0
// Command-line parsing for siflow's subcommands: options with values, positionals, and strict
// number parsing. Every problem is a UsageError naming the argument; it never guesses a value.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace siflow::cli {

// One option of a command. Every option takes a value.
struct OptionSpec {
  const char* name;        // "--steps" (the key values are stored under)
  const char* short_name;  // "-n", or nullptr
  const char* value;       // placeholder in help, e.g. "K"
  const char* help;        // one line, including the default when there is one
};

class ParsedArgs {
 public:
  // Parses argv (without the program and command names). `positionals` names the positional
  // arguments in order, e.g. {"MODEL"}; all are required.
  ParsedArgs(const std::vector<OptionSpec>& specs, const std::vector<const char*>& positionals,
             const std::vector<std::string>& argv);

  const std::string& positional(size_t i) const { return positionals_.at(i); }
  bool has(const char* name) const { return values_.count(name) != 0; }
  // The option's value, or nullptr when it was not given.
  const std::string* find(const char* name) const;
  // The option's value; a UsageError when it was not given.
  const std::string& required(const char* name) const;

 private:
  const std::vector<OptionSpec>& specs_;
  std::map<std::string, std::string> values_;
  std::vector<std::string> positionals_;
};

// True when argv asks for help (-h or --help) anywhere.
bool wants_help(const std::vector<std::string>& argv);

// Strict parsers: the whole text must be the number, else a UsageError naming `option`.
uint64_t parse_uint(const char* option, const std::string& text, uint64_t min, uint64_t max);
double parse_double(const char* option, const std::string& text);
// True and the value when the whole text is a finite number; false otherwise.
bool try_parse_double(const std::string& text, double* out);

}  // namespace siflow::cli
