// SPDX-License-Identifier: Apache-2.0
// Every simd kernel variant this CPU and build can run (nullptr variants left out), for the
// kernel tests that compare each variant with the reference or with one another.
#pragma once

#include <vector>

#include "kernels/simd/kernels.hpp"

namespace test_support {

inline std::vector<const siflow::simd::Kernels*> simd_variants() {
  namespace simd = siflow::simd;
  std::vector<const simd::Kernels*> out;
  for (simd::Isa isa : {simd::Isa::kBaseline, simd::Isa::kAvx2, simd::Isa::kAvx512,
                        simd::Isa::kAvx512Bf16, simd::Isa::kNeonFhm, simd::Isa::kWasmSimd128})
    if (const simd::Kernels* k = simd::kernels_for(isa)) out.push_back(k);
  return out;
}

}  // namespace test_support
