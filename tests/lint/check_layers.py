#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""The runtime's layering, checked (docs/architecture.md, "Layers"), and the rule that no switch
in the runtime hides a forgotten case behind `default:`.

Usage: check_layers.py SOURCE_DIR. Exits 1 naming every #include that runs against the allowed
directions below, every `default:` outside the listed exceptions, and every runtime source over
700 lines."""
import os
import re
import sys

# Folder under runtime/src -> the folders it may include from (besides itself and the public
# headers in runtime/include/siflow/, which every layer may use).
BELOW = {
    "support": set(),
    "math": set(),
    "kernels/reference": {"support", "math"},
    # The optimized kernels are tested against, and fall back to, the reference activations.
    "kernels/simd": {"support", "math", "kernels/reference"},
    "kernels/xnnpack": {"support", "math"},
    "format": {"support", "math"},
    "ops": {"format", "kernels/reference", "kernels/simd", "kernels/xnnpack", "support", "math"},
    "integrate": {"support", "math"},
}
BELOW["net"] = BELOW["ops"] | {"ops"}
BELOW["plan"] = BELOW["net"] | {"net", "integrate"}
BELOW["api"] = BELOW["plan"] | {"plan"}
BELOW["train"] = BELOW["api"] | {"api"}

# `default:` is allowed only in switches over plain integers, never over a kind or an op.
DEFAULT_ALLOWED = {"runtime/src/math/elementary.cc"}  # switches over a quadrant q & 3
MAX_LINES = 700
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"')


def folder_of(rel):
    parts = rel.split("/")
    if parts[0] == "kernels" and len(parts) > 2:
        return "kernels/" + parts[1]
    return parts[0]


def main():
    root = sys.argv[1]
    src = os.path.join(root, "runtime", "src")
    problems = []
    checked = 0
    for base, kind in ((src, "src"), (os.path.join(root, "runtime", "cli"), "cli")):
        for dirpath, _, files in os.walk(base):
            for name in sorted(files):
                if not name.endswith((".cc", ".hpp", ".inc", ".h")):
                    continue
                path = os.path.join(dirpath, name)
                rel = os.path.relpath(path, base)
                shown = os.path.relpath(path, root)
                with open(path, encoding="utf-8") as f:
                    lines = f.readlines()
                checked += 1
                if kind == "src" and len(lines) > MAX_LINES:
                    problems.append(f"{shown}: {len(lines)} lines (the limit is {MAX_LINES})")
                for number, line in enumerate(lines, 1):
                    if re.match(r"^\s*default\s*:", line) and shown not in DEFAULT_ALLOWED:
                        problems.append(f"{shown}:{number}: `default:` in a switch")
                    m = INCLUDE.match(line)
                    if not m:
                        continue
                    target = m.group(1)
                    if target.startswith("siflow/") or target.endswith("_generated.h"):
                        continue
                    if kind == "cli":
                        if os.path.exists(os.path.join(src, target)):
                            problems.append(f"{shown}:{number}: the CLI includes {target}; it "
                                            "may use the public headers only")
                        continue
                    if not os.path.exists(os.path.join(src, target)):
                        continue  # same-folder or system header
                    here, there = folder_of(rel), folder_of(target)
                    if there != here and there not in BELOW.get(here, set()):
                        problems.append(f"{shown}:{number}: {here}/ includes {target} "
                                        f"({there}/ is not below {here}/)")
    if problems:
        print("layering problems:\n  " + "\n  ".join(problems))
        return 1
    print(f"{checked} runtime and CLI sources follow the layering; no `default:` in a switch "
          "over kinds; none over 700 lines")
    return 0


if __name__ == "__main__":
    sys.exit(main())
