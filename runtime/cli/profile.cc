// SPDX-License-Identifier: Apache-2.0
// The --profile table (profile.hpp).
#include "profile.hpp"

#include <algorithm>
#include <cinttypes>
#include <cstdio>

#include "errors.hpp"

namespace siflow::cli {

const OptionSpec kProfileOption{
    "--profile", nullptr, "FILE",
    "time each graph node over the run and write the table (node, op, kernel, calls, ms, %, "
    "GFLOP/s) to FILE, or to standard output for -"};

std::string profile_table(const Model& model, const Plan& plan, const NodeProfile* nodes,
                          double wall_seconds) {
  const uint32_t count = model.info().node_count;
  uint64_t total_ns = 0, most_calls = 0;
  for (uint32_t i = 0; i < count; ++i) {
    total_ns += nodes[i].nanoseconds;
    if (nodes[i].calls > most_calls) most_calls = nodes[i].calls;
  }
  const double total_ms = 1e-6 * static_cast<double>(total_ns);
  std::string out = format("# profile: %u nodes, %" PRIu64
                           " calls each (evaluations x blocks), %.3f ms in nodes of "
                           "%.3f ms wall (%.1f %%)\n",
                           count, most_calls, total_ms, 1e3 * wall_seconds,
                           wall_seconds > 0 ? 100.0 * total_ms / (1e3 * wall_seconds) : 0.0);
  out += format("%5s  %-18s %-22s %8s %10s %6s %8s\n", "node", "op", "kernel", "calls", "ms", "%",
                "GFLOP/s");
  for (uint32_t i = 0; i < count; ++i) {
    const char* op = "";
    model.node(i, &op, nullptr, nullptr);
    const NodeProfile& p = nodes[i];
    const double ms = 1e-6 * static_cast<double>(p.nanoseconds);
    const uint64_t flops = model.node_flops(i);
    const std::string rate =
        flops && p.nanoseconds
            ? format("%.1f", static_cast<double>(flops) * static_cast<double>(p.rows) /
                                 static_cast<double>(p.nanoseconds))
            : std::string("-");
    out += format("%5u  %-18s %-22s %8" PRIu64 " %10.3f %6.1f %8s\n", i, op, plan.node_kernel(i),
                  p.calls, ms, total_ns ? 100.0 * ms / total_ms : 0.0, rate.c_str());
  }
  // The same time summed per op and kernel, largest first.
  struct Group {
    std::string op, kernel;
    uint32_t nodes;
    uint64_t ns;
  };
  std::vector<Group> groups;
  for (uint32_t i = 0; i < count; ++i) {
    const char* op = "";
    model.node(i, &op, nullptr, nullptr);
    const std::string kernel = plan.node_kernel(i);
    auto g = std::find_if(groups.begin(), groups.end(),
                          [&](const Group& x) { return x.op == op && x.kernel == kernel; });
    if (g == groups.end()) g = groups.insert(groups.end(), Group{op, kernel, 0, 0});
    ++g->nodes;
    g->ns += nodes[i].nanoseconds;
  }
  std::stable_sort(groups.begin(), groups.end(),
                   [](const Group& a, const Group& b) { return a.ns > b.ns; });
  out += "# by op and kernel:\n";
  for (const Group& g : groups)
    out +=
        format("#   %-18s %-22s %3u nodes %10.3f ms %6.1f %%\n", g.op.c_str(), g.kernel.c_str(),
               g.nodes, 1e-6 * static_cast<double>(g.ns),
               total_ns ? 100.0 * static_cast<double>(g.ns) / static_cast<double>(total_ns) : 0.0);
  return out;
}

RunProfile::RunProfile(const ParsedArgs& args) : path_(args.find("--profile")) {}

void RunProfile::attach(Plan& plan) {
  if (!path_) return;
  nodes_.assign(plan.model().info().node_count, NodeProfile());
  check(plan.set_profile(nodes_.data(), nodes_.size()));
}

void RunProfile::write(const Plan& plan, double wall_seconds) const {
  if (!path_) return;
  const std::string text = profile_table(plan.model(), plan, nodes_.data(), wall_seconds);
  if (*path_ == "-") {
    std::fputs(text.c_str(), stdout);
    return;
  }
  const FileOutput file{path_->c_str(), text.data(), text.size()};
  check(write_files_atomic(&file, 1));
}

}  // namespace siflow::cli
