// SPDX-License-Identifier: Apache-2.0
// The siflow subcommands: name, help text, options and implementation of each. Implementations
// use the public siflow API only; they report failures by throwing (errors.hpp), never by
// printing an error or exiting themselves.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "args.hpp"

namespace siflow::cli {

struct Command {
  const char* name;
  const char* synopsis;     // the arguments after "siflow NAME"
  const char* summary;      // one line for the command list
  const char* description;  // the help text's paragraph
  std::vector<OptionSpec> options;
  // Runs the command; returns the exit code (0, or 1 when a validation fails).
  int (*run)(const ParsedArgs& args);
  // The positional argument every command but train takes.
  bool takes_model = true;
};

const std::vector<Command>& commands();
// siflow info (info_command.cc).
Command info_command();
// "1234 bytes (1.2 KiB)" and "1.2 KiB": byte counts as the commands print them.
std::string bytes_text(uint64_t n);
std::string human_bytes(uint64_t n);
// siflow tune-solver (tune_command.cc).
Command tune_solver_command();
// siflow train (train_command.cc), in builds with the training library.
Command train_command();
// The command called `name`, or nullptr.
const Command* find_command(const std::string& name);
// "siflow NAME --help".
void print_help(const Command& command, std::FILE* out);

}  // namespace siflow::cli
