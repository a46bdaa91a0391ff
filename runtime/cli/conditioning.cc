// SPDX-License-Identifier: Apache-2.0
// Conditioning options of the CLI (conditioning.hpp): labels from a number or an integer
// .npy/.csv file, condition vectors from a file, the guidance weight and sample's temperature.
// Every problem is a UsageError or RunError naming the option, the file and the row.
#include "conditioning.hpp"

#include <cmath>

#include "array_io.hpp"
#include "errors.hpp"

namespace siflow::cli {

const OptionSpec kLabelOption{"--label", nullptr, "K",
                              "class label K for every row (class-conditional models)"};
const OptionSpec kLabelsOption{"--labels", nullptr, "FILE",
                               "class labels [N], one per row (integer .npy or .csv)"};
const OptionSpec kCondOption{"--cond", nullptr, "FILE",
                             "condition vectors [N, width], one per row (.npy or .csv)"};
const OptionSpec kGuidanceOption{
    "--guidance", nullptr, "W",
    "classifier-free guidance weight: v(null) + W (v(y) - v(null)) (default 1)"};
const OptionSpec kTemperatureOption{"--temperature", nullptr, "T",
                                    "scale the base draws by T > 0 (default 1)"};

const char* const kConditioningInputs[2] = {"--labels", "--cond"};

CliConditioning::CliConditioning(const ParsedArgs& args, const Model& model, size_t rows) {
  const ModelInfo& info = model.info();
  const std::string* label = args.find("--label");
  const std::string* labels = args.find("--labels");
  if (label && labels) throw UsageError("--label and --labels are mutually exclusive");
  if ((label || labels) && !info.takes_labels)
    throw RunError(format("%s: this model takes no class label", label ? "--label" : "--labels"));
  const uint64_t top = info.label_classes ? info.label_classes - 1 : 0;
  if (label) {
    conditioning_.label = static_cast<int32_t>(parse_uint("--label", *label, 0, top));
    text_ += format(", label %d", conditioning_.label);
  }
  if (labels) {
    const std::vector<double> values = read_labels("--labels", *labels);
    if (values.size() != rows)
      throw RunError(format("--labels: '%s' holds %zu labels, but the request has %zu rows",
                            labels->c_str(), values.size(), rows));
    labels_.resize(rows);
    for (size_t i = 0; i < rows; ++i) {
      const double v = values[i];
      if (!(v >= 0.0 && v <= static_cast<double>(top)) || std::floor(v) != v)
        throw RunError(format("--labels: '%s' row %zu holds %.9g, not a class label in [0, %u)",
                              labels->c_str(), i + 1, v, info.label_classes));
      labels_[i] = static_cast<int32_t>(v);
    }
    conditioning_.labels = labels_.data();
    text_ += ", labels from " + *labels;
  }
  if (const std::string* cond = args.find("--cond")) {
    if (info.cond_width == 0) throw RunError("--cond: this model takes no condition vector");
    cond_ = read_points("--cond", *cond, info.cond_width);
    if (cond_.size() != rows * info.cond_width)
      throw RunError(format("--cond: '%s' holds %zu conditions, but the request has %zu rows",
                            cond->c_str(), cond_.size() / info.cond_width, rows));
    conditioning_.cond = cond_.data();
    text_ += ", conditions from " + *cond;
  }
  if (const std::string* w = args.find("--guidance")) {
    guidance_ = parse_double("--guidance", *w);
    if (!std::isfinite(guidance_))
      throw UsageError(format("--guidance: %s is not finite", w->c_str()));
    text_ += format(", guidance %g", guidance_);
  }
}

std::string CliConditioning::describe() const { return text_; }

double parse_temperature(const ParsedArgs& args) {
  const std::string* t = args.find("--temperature");
  if (!t) return 1.0;
  const double value = parse_double("--temperature", *t);
  if (!(value > 0.0) || !std::isfinite(value))
    throw UsageError(format("--temperature: T must be positive and finite, not %s", t->c_str()));
  return value;
}

}  // namespace siflow::cli
