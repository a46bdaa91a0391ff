# SPDX-License-Identifier: Apache-2.0
"""`python3 -m siflow_convert ...` runs the siflow-convert command line."""
import sys

from .cli import main

sys.exit(main())
