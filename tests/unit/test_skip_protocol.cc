// SPDX-License-Identifier: Apache-2.0
// Cases for check_skip_protocol.cmake, which runs this binary with filters and checks how the
// test main (support/doctest_main.cc) ends: a selection of only decorator-skipped cases exits
// with 77 and names them, a failure is never turned into a skip, an empty selection fails.
#include <doctest/doctest.h>

TEST_CASE("a case that runs" * doctest::test_suite("plain")) { CHECK(1 + 1 == 2); }

TEST_CASE("a case this build cannot run" * doctest::test_suite("needs_nothing") *
          doctest::skip(true) * doctest::description("the reason it cannot run")) {
  FAIL("a skipped case ran");
}

TEST_CASE("a case that fails" * doctest::test_suite("failing")) { CHECK(1 + 1 == 3); }
