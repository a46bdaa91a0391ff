// SPDX-License-Identifier: Apache-2.0
// Decorators for test cases that need a part a build may leave out (a thread pool, XNNPACK) or
// the platform a committed file was made on: each puts its cases in a doctest suite of their
// own, skipped at compile time when the part is absent. tests/CMakeLists.txt runs such a suite as
// its own ctest entry, which doctest_main.cc ends with exit code 77 (ctest's SKIP_RETURN_CODE) and
// a SKIPPED line when it ran nothing.
#ifndef SIFLOW_TESTS_SUPPORT_REQUIREMENTS_HPP_
#define SIFLOW_TESTS_SUPPORT_REQUIREMENTS_HPP_

#include <doctest/doctest.h>

namespace siflow_test {

#if defined(SIFLOW_WITH_THREADS)
constexpr bool kHaveThreadPool = true;
#else
constexpr bool kHaveThreadPool = false;
#endif
#if defined(SIFLOW_WITH_XNNPACK)
constexpr bool kHaveXnnpack = true;
#else
constexpr bool kHaveXnnpack = false;
#endif
// The committed example models were written by their generators built for x86-64; elsewhere the
// generators' own double arithmetic (the platform's libm, fused multiply-adds) differs in the
// last bits, so their output is not byte for byte the committed file.
#if defined(__x86_64__)
constexpr bool kX86_64 = true;
#else
constexpr bool kX86_64 = false;
#endif

}  // namespace siflow_test

// Worker threads in a plan (PlanOptions::threads > 1): ctest entry NAME_pool.
#define SIFLOW_NEEDS_POOL                                                            \
  doctest::test_suite("needs_pool") * doctest::skip(!siflow_test::kHaveThreadPool) * \
      doctest::description("needs a thread pool; this build has no threads")

// The xnnpack backend: ctest entry NAME_xnnpack.
#define SIFLOW_NEEDS_XNNPACK                                                         \
  doctest::test_suite("needs_xnnpack") * doctest::skip(!siflow_test::kHaveXnnpack) * \
      doctest::description("needs the xnnpack backend; this build has none (XNNPACK not found)")

// The xnnpack backend with worker threads: ctest entry NAME_xnnpack too.
#define SIFLOW_NEEDS_XNNPACK_AND_POOL                                               \
  doctest::test_suite("needs_xnnpack") *                                            \
      doctest::skip(!(siflow_test::kHaveXnnpack && siflow_test::kHaveThreadPool)) * \
      doctest::description("needs the xnnpack backend and a thread pool; this build lacks one")

// An x86-64 target, where the committed example models were generated: ctest entry NAME_x86_64.
#define SIFLOW_NEEDS_X86_64                                                    \
  doctest::test_suite("needs_x86_64") * doctest::skip(!siflow_test::kX86_64) * \
      doctest::description(                                                    \
          "the committed bytes are what the generator writes on x86-64; this " \
          "target's libm and fused multiply-adds change its last bits")

#endif  // SIFLOW_TESTS_SUPPORT_REQUIREMENTS_HPP_
