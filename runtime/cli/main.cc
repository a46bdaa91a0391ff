// SPDX-License-Identifier: Apache-2.0
// siflow: the command-line tool. Dispatches to a subcommand and turns its failures into a
// message and exit code (2: usage, 1: run failure). Uses the public siflow API only; it must
// never include the runtime's internal headers.
#include <cstdio>
#include <exception>
#include <new>
#include <string>
#include <vector>

#include "args.hpp"
#include "commands.hpp"
#include "errors.hpp"
#include "siflow/siflow.hpp"

namespace {

using siflow::cli::Command;

void print_usage(std::FILE* out) {
  std::fprintf(out,
               "siflow %d.%d.%d: sampling and exact log-likelihoods of stochastic-interpolant "
               "flows\n\nUsage: siflow COMMAND MODEL [options]\n\nCommands:\n",
               siflow::kVersionMajor, siflow::kVersionMinor, siflow::kVersionPatch);
  for (const Command& c : siflow::cli::commands())
    std::fprintf(out, "  %-12s%s\n", c.name, c.summary);
  std::fprintf(out,
               "  %-12s%s\n\nRun 'siflow help COMMAND' or 'siflow COMMAND --help' for a "
               "command's options;\n'siflow --version' for the version.\n",
               "help", "show a command's options");
}

int dispatch(const std::vector<std::string>& args, const Command** command) {
  using siflow::cli::UsageError;
  if (args.empty()) {
    print_usage(stderr);
    return 2;
  }
  const std::string& first = args[0];
  if (first == "-h" || first == "--help") {
    print_usage(stdout);
    return 0;
  }
  if (first == "--version") {
    std::printf("siflow %d.%d.%d (model format %u.%u)\n", siflow::kVersionMajor,
                siflow::kVersionMinor, siflow::kVersionPatch, siflow::kFormatMajor,
                siflow::kFormatMinor);
    return 0;
  }
  if (first == "help") {
    if (args.size() == 1) {
      print_usage(stdout);
      return 0;
    }
    if (args.size() > 2) throw UsageError("help takes one command name");
    const Command* c = siflow::cli::find_command(args[1]);
    if (!c) throw UsageError("unknown command '" + args[1] + "'");
    siflow::cli::print_help(*c, stdout);
    return 0;
  }
  *command = siflow::cli::find_command(first);
  if (!*command) throw UsageError("unknown command '" + first + "'");
  const std::vector<std::string> rest(args.begin() + 1, args.end());
  if (siflow::cli::wants_help(rest)) {
    siflow::cli::print_help(**command, stdout);
    return 0;
  }
  std::vector<const char*> positionals;
  if ((*command)->takes_model) positionals.push_back("MODEL");
  const siflow::cli::ParsedArgs parsed((*command)->options, positionals, rest);
  return (*command)->run(parsed);
}

}  // namespace

int main(int argc, char** argv) {
  const Command* command = nullptr;
  try {
    const int code = dispatch(std::vector<std::string>(argv + 1, argv + argc), &command);
    if (std::fflush(stdout) != 0 || std::ferror(stdout))
      throw siflow::cli::RunError("cannot write to standard output");
    return code;
  } catch (const siflow::cli::UsageError& e) {
    const std::string name = command ? std::string(" ") + command->name : "";
    std::fprintf(stderr, "siflow%s: %s\nTry 'siflow%s --help' for usage.\n", name.c_str(), e.what(),
                 name.c_str());
    return 2;
  } catch (const siflow::cli::RunError& e) {
    std::fprintf(stderr, "siflow: %s\n", e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "siflow: out of memory\n");
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "siflow: %s\n", e.what());
    return 1;
  }
}
