#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
# Few-step sampling benchmark (issue 16): sample error and log-likelihood error against NFE for
# the fixed-grid methods on every grid kind and for tuned solvers, on every bundled model, against
# a dopri5 converged reference; one PNG per model and a markdown summary with the two targets.
#
# Usage: bench/few_step.py SIFLOW_BINARY OUT_DIR [MODEL.sif ...]   (default: examples/models/*.sif)
import glob
import json
import os
import re
import subprocess
import sys
import tempfile

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N = 1024          # samples per measurement (one chunk: --max-batch N)
N_LOGP = 256      # reference samples whose log-likelihood error is measured
SEED = 7          # base draws of the benchmark (tune-solver fits on seed 0: these are held out)
REFERENCE = ["--method", "dopri5", "--rtol", "1e-9", "--atol", "1e-9"]
NFES = [4, 8, 16, 24, 32, 64]
METHODS = ["euler", "heun", "midpoint", "rk4", "ab2", "ab3", "ab4"]
GRIDS = ["uniform", "shift:2", "power:2", "cosine"]
TUNED_NFES = [4, 6, 8, 12, 16, 24, 32]
TIMING_N = 16384  # samples of the timed runs (time to a sample error of 1e-2)


def steps_for(method, nfe):
    """Steps of `method` that use exactly nfe evaluations, or None when none does."""
    if method in ("euler", "ab2"):
        return nfe
    if method in ("heun", "midpoint"):
        return nfe // 2 if nfe % 2 == 0 else None
    if method == "rk4":
        return nfe // 4 if nfe % 4 == 0 else None
    if method == "ab3":
        return nfe - 2 if nfe >= 4 else None
    if method == "ab4":
        return nfe - 9 if nfe >= 12 else None
    raise ValueError(method)


class Runner:
    def __init__(self, binary, work):
        self.binary = binary
        self.work = work

    def run(self, *args):
        """Runs siflow; returns (NFE, seconds) from its summary line."""
        p = subprocess.run([self.binary, *map(str, args)], capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError(f"siflow {' '.join(map(str, args))}: {p.stderr.strip()}")
        m = re.search(r"NFE (\d+), ([0-9.]+) s", p.stderr)
        return (int(m.group(1)), float(m.group(2))) if m else (None, None)

    def sample(self, model, options, n=N):
        out = os.path.join(self.work, "x.npy")
        nfe, seconds = self.run("sample", model, "-n", n, "--seed", SEED, "--max-batch", n,
                                "-o", out, *options)
        return np.load(out), nfe, seconds

    def logprob(self, model, points, options):
        out = os.path.join(self.work, "lp.npy")
        nfe, _ = self.run("logprob", model, "-i", points, "--max-batch", N, "-o", out, *options)
        return np.load(out), nfe


def sample_error(x, ref):
    """RMS distance to the converged samples over their RMS spread around their mean."""
    spread = np.sqrt(np.mean(np.sum((ref - ref.mean(axis=0)) ** 2, axis=1)))
    return float(np.sqrt(np.mean(np.sum((x.astype(np.float64) - ref) ** 2, axis=1))) / spread)


def measure_model(runner, model, out_dir):
    name = os.path.splitext(os.path.basename(model))[0]
    ref, ref_nfe, _ = runner.sample(model, REFERENCE)
    ref = ref.astype(np.float64)
    ref_path = os.path.join(runner.work, f"{name}_ref.npy")
    np.save(ref_path, ref[:N_LOGP].astype(np.float32))
    lp_ref, lp_ref_nfe = runner.logprob(model, ref_path, REFERENCE)
    rows = []

    def record(label, method, grid, options, on=model):
        x, nfe, _ = runner.sample(on, options)
        lp, lp_nfe = runner.logprob(on, ref_path, options)
        assert nfe == lp_nfe, (label, nfe, lp_nfe)
        rows.append({"label": label, "method": method, "grid": grid, "nfe": nfe,
                     "sample_error": sample_error(x, ref),
                     "logp_error": float(np.mean(np.abs(lp - lp_ref)))})

    for method in METHODS:
        for grid in GRIDS:
            for nfe in NFES:
                steps = steps_for(method, nfe)
                if steps is None:
                    continue  # not reachable with this method: not plotted
                record(f"{method} {grid}", method, grid,
                       ["--method", method, "--steps", steps, "--grid-kind", grid])
    tuned_model = model
    tune_log = []
    for nfe in TUNED_NFES:
        # Each tuning adds its solver to a copy of the previous file (an output never overwrites
        # its input).
        tuned_path = os.path.join(runner.work, f"{name}_tuned{nfe}.sif")
        p = subprocess.run([runner.binary, "tune-solver", tuned_model, "--nfe", str(nfe), "-o",
                            tuned_path], capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError(f"tune-solver {name} --nfe {nfe}: {p.stderr.strip()}")
        tune_log.append(p.stdout)
        tuned_model = tuned_path
        record("tuned", "tuned", "", ["--solver", f"tuned-{nfe}"], tuned_path)
        rows[-1]["model_file"] = tuned_path
    # Time to a sample error of 1e-2: uniform-grid RK4 (the smallest step count that reaches it)
    # against the cheapest configuration measured above that reaches it.
    rk4_steps = None
    for steps in range(1, 65):
        x, _, _ = runner.sample(model, ["--method", "rk4", "--steps", steps])
        if sample_error(x, ref) <= 1e-2:
            rk4_steps = steps
            break
    reaching = [r for r in rows if r["sample_error"] <= 1e-2]
    best = min(reaching, key=lambda r: r["nfe"]) if reaching else None
    timing = None
    if rk4_steps and best:
        def best_options(r):
            if r["method"] == "tuned":
                return ["--solver", f"tuned-{r['nfe']}"]
            return ["--method", r["method"], "--steps", steps_for(r["method"], r["nfe"]),
                    "--grid-kind", r["grid"]]
        best_model = best.get("model_file", model)
        times = {"rk4": [], "best": []}
        for _ in range(3):
            times["rk4"].append(runner.sample(model, ["--method", "rk4", "--steps", rk4_steps],
                                              TIMING_N)[2])
            times["best"].append(runner.sample(best_model, best_options(best), TIMING_N)[2])
        timing = {"rk4_steps": rk4_steps, "rk4_nfe": 4 * rk4_steps,
                  "rk4_seconds": float(np.median(times["rk4"])), "best": best["label"],
                  "best_nfe": best["nfe"], "best_seconds": float(np.median(times["best"]))}
    plot(name, rows, os.path.join(out_dir, f"few_step_{name}.png"))
    return {"model": name, "reference_nfe": ref_nfe, "reference_logprob_nfe": lp_ref_nfe,
            "rows": rows, "timing": timing, "tune_log": tune_log}


def plot(name, rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5))
    colors = dict(zip(METHODS, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    styles = dict(zip(GRIDS, ["-", "--", ":", "-."]))
    for ax, key, title in ((axes[0], "sample_error", "sample error"),
                           (axes[1], "logp_error", "mean |log p error|")):
        labels = sorted({r["label"] for r in rows}, key=lambda s: (s == "tuned", s))
        for label in labels:
            pts = sorted((r["nfe"], r[key]) for r in rows if r["label"] == label and r[key] > 0)
            if not pts:
                continue
            if label == "tuned":
                ax.plot(*zip(*pts), "k-o", lw=2.5, label="tuned solver")
            else:
                method, grid = label.split(" ")
                ax.plot(*zip(*pts), styles[grid], color=colors[method], marker=".",
                        label=label, alpha=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("NFE (network evaluations per sample)")
        ax.set_title(f"{name}: {title} vs dopri5 (rtol 1e-9)")
        ax.grid(True, which="both", alpha=0.3)
    axes[1].legend(fontsize=6, ncol=2, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def best_untuned_at(rows, nfe):
    cands = [r for r in rows if r["method"] != "tuned" and r["nfe"] == nfe]
    return min(cands, key=lambda r: r["sample_error"]) if cands else None


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__ or "usage: few_step.py SIFLOW OUT_DIR [MODEL ...]")
    binary, out_dir = sys.argv[1], sys.argv[2]
    # By default the point models; the class-conditional digits.sif needs labels (own card).
    bundled = glob.glob(os.path.join(REPO, "examples", "models", "*.sif"))
    models = sys.argv[3:] or sorted(m for m in bundled if os.path.basename(m) != "digits.sif")
    os.makedirs(out_dir, exist_ok=True)
    results = []
    with tempfile.TemporaryDirectory() as work:
        runner = Runner(binary, work)
        for model in models:
            print(f"measuring {os.path.basename(model)} ...", file=sys.stderr, flush=True)
            results.append(measure_model(runner, model, out_dir))
    with open(os.path.join(out_dir, "few_step.json"), "w") as f:
        json.dump(results, f, indent=1)
    print("| model | tuned @8: NFE, sample error | best untuned @24: config, error | target 1 |"
          " RK4 uniform to 1e-2: NFE, s | best to 1e-2: config, NFE, s | speed-up | target 2 |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        tuned8 = next(x for x in r["rows"] if x["method"] == "tuned" and x["nfe"] <= 8
                      and x.get("model_file") and x["label"] == "tuned" and x["nfe"] == 8)
        b24 = best_untuned_at(r["rows"], 24)
        t1 = tuned8["sample_error"] <= b24["sample_error"]
        t = r["timing"]
        if t:
            speed = t["rk4_seconds"] / t["best_seconds"]
            cells = (f"{t['rk4_nfe']}, {t['rk4_seconds']:.4f} | {t['best']}, {t['best_nfe']}, "
                     f"{t['best_seconds']:.4f} | {speed:.2f}x | {'met' if speed >= 3 else 'MISSED'}")
        else:
            cells = "not reached | | | MISSED"
        print(f"| {r['model']} | 8, {tuned8['sample_error']:.3g} | {b24['label']}, "
              f"{b24['sample_error']:.3g} | {'met' if t1 else 'MISSED'} | {cells} |")


if __name__ == "__main__":
    main()
