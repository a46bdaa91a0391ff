// SPDX-License-Identifier: Apache-2.0
// The CLI's conditioning options: --label K or --labels FILE (class labels), --cond FILE
// (condition vectors), --guidance W (classifier-free guidance weight, a plan option) and
// sample's --temperature T, read and checked against the model before any work.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "args.hpp"
#include "siflow/siflow.hpp"

namespace siflow::cli {

extern const OptionSpec kLabelOption, kLabelsOption, kCondOption, kGuidanceOption,
    kTemperatureOption;

// Labels and conditions of one request, owned here; conditioning() points into them.
class CliConditioning {
 public:
  // Parses --label/--labels/--cond/--guidance for `rows` rows of `model`: a labels file holds
  // `rows` integers in the model's classes, a cond file [rows, cond width] finite values. The
  // model's needs (labels, conditions, a null label for guidance) are checked by the runtime.
  CliConditioning(const ParsedArgs& args, const Model& model, size_t rows);
  const Conditioning& conditioning() const { return conditioning_; }
  double guidance() const { return guidance_; }
  // ", label 3, guidance 2" etc. for the summary line; "" when nothing was given.
  std::string describe() const;

 private:
  std::vector<int32_t> labels_;
  std::vector<float> cond_;
  Conditioning conditioning_;
  double guidance_ = 1.0;
  std::string text_;
};

// --temperature T: positive and finite (1 when not given).
double parse_temperature(const ParsedArgs& args);

// Files the options read, for the CLI's input/output distinctness check.
extern const char* const kConditioningInputs[2];

}  // namespace siflow::cli
