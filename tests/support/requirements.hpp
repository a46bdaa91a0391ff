// SPDX-License-Identifier: Apache-2.0
// Decorators for test cases that need a part a build may leave out (a thread pool, XNNPACK):
// each puts its cases in a doctest suite of their own, skipped at compile time when the part is
// absent. tests/CMakeLists.txt runs such a suite as its own ctest entry, which doctest_main.cc
// ends with exit code 77 (ctest's SKIP_RETURN_CODE) and a SKIPPED line when it ran nothing.
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

}  // namespace siflow_test

// Worker threads in a plan (PlanOptions::threads > 1): ctest entry NAME_pool.
#define SIFLOW_NEEDS_POOL                                                            \
  doctest::test_suite("needs_pool") * doctest::skip(!siflow_test::kHaveThreadPool) * \
      doctest::description("needs a thread pool; this build has none (pthreadpool not found)")

// The xnnpack backend: ctest entry NAME_xnnpack.
#define SIFLOW_NEEDS_XNNPACK                                                         \
  doctest::test_suite("needs_xnnpack") * doctest::skip(!siflow_test::kHaveXnnpack) * \
      doctest::description("needs the xnnpack backend; this build has none (XNNPACK not found)")

// The xnnpack backend with worker threads: ctest entry NAME_xnnpack too.
#define SIFLOW_NEEDS_XNNPACK_AND_POOL                                               \
  doctest::test_suite("needs_xnnpack") *                                            \
      doctest::skip(!(siflow_test::kHaveXnnpack && siflow_test::kHaveThreadPool)) * \
      doctest::description("needs the xnnpack backend and a thread pool; this build lacks one")

#endif  // SIFLOW_TESTS_SUPPORT_REQUIREMENTS_HPP_
