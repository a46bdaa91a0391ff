// SPDX-License-Identifier: Apache-2.0
// --profile FILE|-: where a run's time goes, node by node (Plan::set_profile), printed as a table
// after the run. Uses the public siflow API only.
#pragma once

#include <string>
#include <vector>

#include "args.hpp"
#include "siflow/siflow.hpp"

namespace siflow::cli {

extern const OptionSpec kProfileOption;

// The table: per graph node its index, op, kernel, calls, total milliseconds, share of all
// nodes' time and GFLOP/s (ops with a known count, Model::node_flops), under a line with the
// run's wall time and the nodes' share of it, then the time summed per op and kernel (lines
// starting with '#', as the first).
std::string profile_table(const Model& model, const Plan& plan, const NodeProfile* nodes,
                          double wall_seconds);

// The --profile option of one command run: off without it.
class RunProfile {
 public:
  explicit RunProfile(const ParsedArgs& args);
  // Points the plan's runs at the table (nothing without --profile).
  void attach(Plan& plan);
  // Writes the table to the file (atomically) or, for "-", to standard output.
  void write(const Plan& plan, double wall_seconds) const;

 private:
  const std::string* path_;
  std::vector<NodeProfile> nodes_;
};

}  // namespace siflow::cli
