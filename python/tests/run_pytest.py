# SPDX-License-Identifier: Apache-2.0
# Runs the Python module's pytest suite for ctest: exits 77 (ctest's SKIP_RETURN_CODE) with the
# reason when numpy or pytest is missing, else pytest's own exit status.
import sys

for module, package in (("numpy", "python3-numpy"), ("pytest", "python3-pytest")):
    try:
        __import__(module)
    except ImportError:
        print(f"SKIPPED: {module} is not installed (Debian: {package})")
        sys.exit(77)

import pytest  # noqa: E402

sys.exit(pytest.main(["-q", "-rs", "-p", "no:cacheprovider", *sys.argv[1:]]))
