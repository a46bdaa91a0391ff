// SPDX-License-Identifier: Apache-2.0
// doctest's main for every test binary. A run in which every selected case was skipped by its
// decorator (support/requirements.hpp: a part this build leaves out) prints a SKIPPED line with
// the reason for each and exits with 77, which ctest reports as "Skipped" (SKIP_RETURN_CODE);
// a run that selects no case at all fails, so a wrong filter cannot pass.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace {

struct SkippedCase {
  std::string name, suite, reason;
};

struct RunRecord {
  bool ended = false;  // a test run happened (not --help, --list-test-cases, --count, ...)
  unsigned ran = 0;    // cases that passed the filters and were not skipped by a decorator
  std::vector<SkippedCase> skipped;  // cases skipped by their decorator
};

RunRecord& record() {
  static RunRecord r;
  return r;
}

// A doctest listener: sees every case, run or skipped, next to the chosen reporter.
struct SkipListener : doctest::IReporter {
  explicit SkipListener(const doctest::ContextOptions&) {}
  void report_query(const doctest::QueryData&) override {}
  void test_run_start() override {}
  void test_run_end(const doctest::TestRunStats& stats) override {
    record().ended = true;
    record().ran = stats.numTestCasesPassingFilters;
  }
  void test_case_start(const doctest::TestCaseData&) override {}
  void test_case_reenter(const doctest::TestCaseData&) override {}
  void test_case_end(const doctest::CurrentTestCaseStats&) override {}
  void test_case_exception(const doctest::TestCaseException&) override {}
  void subcase_start(const doctest::SubcaseSignature&) override {}
  void subcase_end() override {}
  void log_assert(const doctest::AssertData&) override {}
  void log_message(const doctest::MessageData&) override {}
  void test_case_skipped(const doctest::TestCaseData& tc) override {
    if (!tc.m_skip) return;  // left out by a filter, not by its decorator
    record().skipped.push_back({tc.m_name, tc.m_test_suite ? tc.m_test_suite : "",
                                tc.m_description ? tc.m_description : "marked skip"});
  }
};

REGISTER_LISTENER("siflow_skips", 1, SkipListener);

// The suites named by --test-suite=A,B (or -ts=), so that only their skipped cases are named;
// empty (name every skipped case) without that option or with a wildcard in it.
std::vector<std::string> selected_suites(int argc, char** argv) {
  std::vector<std::string> suites;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    for (const char* prefix : {"--test-suite=", "-ts=", "--dt-test-suite=", "--dt-ts="}) {
      if (arg.rfind(prefix, 0) != 0) continue;
      std::string list = arg.substr(std::strlen(prefix));
      if (list.find_first_of("*?") != std::string::npos) return {};
      size_t start = 0;
      while (start <= list.size()) {
        const size_t comma = list.find(',', start);
        const size_t end = comma == std::string::npos ? list.size() : comma;
        suites.push_back(list.substr(start, end - start));
        start = end + 1;
      }
    }
  }
  return suites;
}

}  // namespace

int main(int argc, char** argv) {
  doctest::Context context(argc, argv);
  const int rc = context.run();
  const RunRecord& r = record();
  if (context.shouldExit() || rc != 0 || !r.ended || r.ran > 0) return rc;
  const std::vector<std::string> suites = selected_suites(argc, argv);
  int named = 0;
  for (const SkippedCase& s : r.skipped) {
    bool selected = suites.empty();
    for (const std::string& suite : suites) selected = selected || suite == s.suite;
    if (!selected) continue;
    std::printf("SKIPPED: \"%s\": %s\n", s.name.c_str(), s.reason.c_str());
    ++named;
  }
  if (named == 0) {
    std::fprintf(stderr, "no test case matches the filters: nothing was tested\n");
    return 1;
  }
  return 77;  // ctest's SKIP_RETURN_CODE for every doctest binary (tests/CMakeLists.txt)
}
