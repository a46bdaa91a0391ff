// SPDX-License-Identifier: Apache-2.0
// siflow info: what a model is (name, format, shapes, interpolant, base, conditioning, test
// vectors, stored solvers, metadata), the memory a run needs and the kernel of each node. A
// client of the public siflow API only, like the other commands.
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "commands.hpp"
#include "errors.hpp"
#include "run_options.hpp"
#include "siflow/siflow.hpp"

namespace siflow::cli {
namespace {

// Metadata text with control characters escaped, so a value cannot break the layout.
std::string printable(const char* text) {
  std::string out;
  for (const char* c = text; *c; ++c) {
    const unsigned char u = static_cast<unsigned char>(*c);
    if (u == '\n')
      out += "\\n";
    else if (u < 32 || u == 127)
      out += format("\\x%02x", u);
    else
      out += *c;
  }
  return out;
}

// "[1, 8, 8]": a per-sample shape as `siflow info` prints it.
std::string dims_text(const uint32_t* dims, uint32_t rank) {
  std::string s = "[";
  for (uint32_t i = 0; i < rank; ++i) s += format(i ? ", %u" : "%u", dims[i]);
  return s + "]";
}

int run_info(const ParsedArgs& args) {
  const std::string* batch_text = args.find("--batch");
  const size_t batch = batch_text ? parse_uint("--batch", *batch_text, 1, Limits::kMaxBatch)
                                  : PlanOptions().max_batch;
  const Execution execution = parse_execution(args);
  const std::unique_ptr<Model> model = load_model(args.positional(0));
  const ModelInfo& info = model->info();
  PlanOptions po;
  po.max_batch = batch;
  size_t exact = 0, plain = 0;
  check(arena_bytes(*model, po, &exact));
  po.divergence = DivergenceMode::kNone;
  check(arena_bytes(*model, po, &plain));

  std::printf("model         %s\n", *info.name ? printable(info.name).c_str() : "(unnamed)");
  std::printf("format        %u.%u\n", info.format_major, info.format_minor);
  std::printf("dim           %u\n", info.dim);
  std::printf("x shape       %s\n", dims_text(info.x_shape, info.x_rank).c_str());
  std::printf("nodes         %u\n", info.node_count);
  std::printf("parameters    %" PRIu64 " (%s of weights in the file)\n", info.parameter_count,
              human_bytes(info.weight_bytes).c_str());
  if (info.f16_parameter_count > 0)
    std::printf("fp16 weights  %" PRIu64 " parameters stored as fp16, expanded at load into %s\n",
                info.f16_parameter_count, human_bytes(info.expanded_bytes).c_str());
  if (info.interpolant == InterpolantKind::kLearnedFourier)
    std::printf("interpolant   learned Fourier (%u terms)\n", info.fourier_terms);
  else
    std::printf("interpolant   %s\n", interpolant_kind_name(info.interpolant));
  std::printf("base          %s\n", base_kind_name(info.base));
  std::printf("normalized    %s\n", info.normalized ? "yes" : "no");
  std::printf("score         %s\n", info.score_available ? "available (SDE sampling possible)"
                                                         : "not available (no SDE sampling)");
  std::printf("time range    [%g, %g]\n", info.time_start, info.time_end);
  if (info.takes_labels) {
    const std::string null_label =
        info.null_label >= 0 ? format("null label %d (guidance possible)", info.null_label)
                             : std::string("no null label (no guidance)");
    std::printf("labels        %u classes (0 to %u), %s\n", info.label_classes,
                info.label_classes - 1, null_label.c_str());
  }
  if (info.cond_width > 0)
    std::printf("condition     width %u, %s\n", info.cond_width,
                info.has_null_cond ? "null vector stored (guidance possible)"
                                   : "no null vector (no guidance)");
  if (info.test_vector_count == 0 && info.test_trajectory_count == 0)
    std::printf("test vectors  none\n");
  else
    std::printf("test vectors  %u velocity points, %u trajectories\n", info.test_vector_count,
                info.test_trajectory_count);
  if (info.solver_count == 0) {
    std::printf("solvers       none\n");
  } else {
    std::printf("solvers       %u stored (siflow sample --solver NAME)\n", info.solver_count);
    SolverInfo solver;
    for (uint32_t i = 0; model->solver(i, &solver); ++i)
      std::printf(
          "  %-12s %s, %u steps, NFE %u, sample error %.3g%s%s%s\n", solver.name,
          method_name(solver.method), solver.steps, solver.nfe, solver.sample_error,
          solver.coefficient_count
              ? format(", %u per-step coefficients", solver.coefficient_count).c_str()
              : "",
          solver.test_count ? format(", %u test points", solver.test_count).c_str() : "",
          solver.label >= 0 || solver.guidance != 1.0
              ? format(", tuned for label %d, guidance %g", solver.label, solver.guidance).c_str()
              : "");
  }
  std::printf("metadata      %u entries\n", info.metadata_count);
  const char* key = nullptr;
  const char* value = nullptr;
  for (uint32_t i = 0; model->metadata(i, &key, &value); ++i)
    std::printf("  %s = %s\n", printable(key).c_str(), printable(value).c_str());
  std::printf("arena         %s for batch %zu with exact divergence (log-likelihoods)\n",
              bytes_text(exact).c_str(), batch);
  std::printf("              %s for batch %zu without divergence (sampling, encoding)\n",
              bytes_text(plain).c_str(), batch);
  std::printf("model memory  %s held by the loaded model", bytes_text(info.held_bytes).c_str());
  if (info.packed_bytes > 0)
    std::printf(" (%s of it dense weights packed for the simd kernels)",
                bytes_text(info.packed_bytes).c_str());
  std::printf("\n");
  // Heap-free embedding: the caller memory loading these bytes takes (LoadOptions::memory),
  // measured on a 64-byte aligned copy of the file (bytes used in place).
  std::vector<uint8_t> file_bytes;
  if (std::FILE* f = std::fopen(args.positional(0).c_str(), "rb")) {
    uint8_t chunk[65536];
    size_t got;
    while ((got = std::fread(chunk, 1, sizeof chunk, f)) > 0)
      file_bytes.insert(file_bytes.end(), chunk, chunk + got);
    std::fclose(f);
  }
  std::vector<uint8_t> aligned(file_bytes.size() + 64);
  uint8_t* at = aligned.data();
  while (reinterpret_cast<uintptr_t>(at) % 64) ++at;
  if (!file_bytes.empty()) std::memcpy(at, file_bytes.data(), file_bytes.size());
  size_t load_memory = 0;
  if (Model::memory_bytes(at, file_bytes.size(), LoadOptions(), &load_memory).ok())
    std::printf(
        "static load   %s of caller memory to load it without a heap (LoadOptions::memory;"
        " the model's bytes 64-byte aligned, else add their size)\n",
        bytes_text(load_memory).c_str());
  std::printf("total memory  %s with exact divergence, %s without\n",
              bytes_text(exact + info.held_bytes).c_str(),
              bytes_text(plain + info.held_bytes).c_str());
  // The kernel each node runs on, from a plan made as sample/logprob would make it.
  const std::unique_ptr<Plan> plan = make_plan(*model, batch, nullptr, execution);
  std::printf("kernels       backend %s%s, %u thread%s, precision %s\n",
              backend_name(execution.backend), execution.tune ? " (tuned)" : "", plan->threads(),
              plan->threads() == 1 ? "" : "s", precision_name(execution.precision));
  if (plan->velocity_threads() != plan->threads()) {
    // The plan makes this choice by timing, unless the variable below forces it.
    const char* forced = std::getenv("SIFLOW_VELOCITY_ON_CALLER");
    std::printf("              sampling runs on %u thread%s: %s\n", plan->velocity_threads(),
                plan->velocity_threads() == 1 ? "" : "s",
                forced ? "SIFLOW_VELOCITY_ON_CALLER=1 keeps it on the caller's thread"
                       : "tuning timed splitting each layer slower at this batch");
  }
  const size_t block = plan->block_rows();
  if (block < batch)
    std::printf("blocks        %zu rows per network block (of %zu)%s\n", block, batch,
                execution.block_rows ? ", --block-rows" : ": the plan's choice");
  else
    std::printf("blocks        one network block of all %zu rows%s\n", batch,
                execution.block_rows ? ", --block-rows" : ": the plan's choice");
  for (uint32_t i = 0; i < info.node_count; ++i) {
    const char* op = "";
    uint32_t in = 0, width = 0;
    model->node(i, &op, &in, &width);
    const std::string shape =
        std::string(op) == "fully_connected" ? format("%u -> %u", in, width) : format("%u", width);
    std::printf("  node %-3u %-18s %-12s %s\n", i, op, shape.c_str(), plan->node_kernel(i));
  }
  // Each node's per-sample output shape (the flat width above, as the op lays it out).
  std::printf("shapes        each node's output per sample\n");
  for (uint32_t i = 0; i < info.node_count; ++i) {
    const char* op = "";
    uint32_t dims[3];
    model->node(i, &op, nullptr, nullptr);
    const uint32_t rank = model->node_shape(i, dims);
    std::printf("  node %-3u %-18s %s\n", i, op, dims_text(dims, rank).c_str());
  }
  return 0;
}

}  // namespace

Command info_command() {
  return {"info",
          "MODEL [--batch N] [--backend B] [--threads N] [--precision P] [--block-rows N]",
          "summarize a model and the memory a run needs",
          "Prints the model's name, format version, dimension and x's shape, graph size,\n"
          "parameter count,\n"
          "interpolant, base, normalization, score availability, time range, test vectors and\n"
          "metadata, then the arena a plan for batch N needs (siflow::arena_bytes), the\n"
          "total memory of a run (arena + the loaded model's own memory), the rows per network\n"
          "block (--block-rows, or the plan's choice for its cache budget), and each graph node's\n"
          "output width and the kernel it runs on with the chosen backend and threads, then\n"
          "x's shape and each node's output shape.",
          {{"--batch", nullptr, "N", "batch size the arena is planned for (default 256)"},
           kThreadsOption,
           kBackendOption,
           kTuneKernelsOption,
           kBlockRowsOption,
           kPrecisionOption},
          run_info};
}

}  // namespace siflow::cli
