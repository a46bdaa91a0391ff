// SPDX-License-Identifier: Apache-2.0
// The loader's checks of conditioning (format 1.4): at most one LabelInput and one CondInput and
// what ModelInfo says about them; the test vectors' labels, conditions and guidance weight.
#pragma once

#include "format/model_data.hpp"
#include "siflow_generated.h"

namespace siflow::detail {

// After every node passed its op's verify(): fills label_tensor, cond_tensor, null_cond and the
// ModelInfo conditioning fields; refuses a second LabelInput or CondInput.
Status check_conditioning(ModelData* data);
// The test vectors' labels [count], conditions [count, cond width] (and the trajectories'),
// present exactly when the model reads them, in range and finite; a guidance weight other than
// 1 only with a null label / null vector. Needs check_conditioning first.
Status check_test_conditioning(ModelData* data, const fb::TestVectors& tv);

}  // namespace siflow::detail
