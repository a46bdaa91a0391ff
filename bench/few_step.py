#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
# Few-step sampling benchmark (issue 16): sample error and log-likelihood error against NFE for
# the fixed-grid methods on every grid kind and for tuned solvers, on every bundled model, against
# a dopri5 converged reference; one PNG per model and a markdown summary with the two targets.
#
# Usage: bench/few_step.py SIFLOW_BINARY OUT_DIR [MODEL.sif ...] [options]
#   (default: the point models of examples/models/). A class-conditional model (digits.sif) runs
#   with --label K [--guidance W] on one class, and usually with smaller sets: see --help.
import argparse
import glob
import json
import os
import re
import resource
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
    def __init__(self, binary, work, args):
        self.binary = binary
        self.work = work
        self.n = args.n
        # Label and guidance options of sample/logprob/tune-solver (class-conditional models).
        self.cond = []
        if args.label is not None:
            self.cond = ["--label", args.label, "--guidance", args.guidance]
        self.divergence = ["--divergence", args.logp_divergence]

    def run(self, *args):
        """Runs siflow; returns (NFE, seconds) from its summary line. self.cpu: the CPU seconds
        (user + system) the run took, robust on a shared machine where wall seconds are not."""
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        p = subprocess.run([self.binary, *map(str, args)], capture_output=True, text=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        if p.returncode != 0:
            raise RuntimeError(f"siflow {' '.join(map(str, args))}: {p.stderr.strip()}")
        m = re.search(r"NFE (\d+), ([0-9.]+) s", p.stderr)
        return (int(m.group(1)), float(m.group(2))) if m else (None, None)

    def sample(self, model, options, n=None):
        n = n or self.n
        out = os.path.join(self.work, "x.npy")
        nfe, seconds = self.run("sample", model, "-n", n, "--seed", SEED, "--max-batch", n,
                                "-o", out, *self.cond, *options)
        x = np.load(out)
        return x.reshape(x.shape[0], -1), nfe, seconds

    def logprob(self, model, points, options):
        out = os.path.join(self.work, "lp.npy")
        nfe, _ = self.run("logprob", model, "-i", points, "--max-batch", self.n, "-o", out,
                          *self.cond, *self.divergence, *options)
        return np.load(out), nfe


def sample_error(x, ref):
    """RMS distance to the converged samples over their RMS spread around their mean."""
    spread = np.sqrt(np.mean(np.sum((ref - ref.mean(axis=0)) ** 2, axis=1)))
    return float(np.sqrt(np.mean(np.sum((x.astype(np.float64) - ref) ** 2, axis=1))) / spread)


def measure_model(runner, model, out_dir, args):
    name = os.path.splitext(os.path.basename(model))[0]
    ref, ref_nfe, _ = runner.sample(model, REFERENCE)
    ref = ref.astype(np.float64)
    ref_path = os.path.join(runner.work, f"{name}_ref.npy")
    # The model's own sample shape ([N, C, H, W] for an image model) for logprob's input.
    shape = np.load(os.path.join(runner.work, "x.npy")).shape[1:]
    np.save(ref_path, ref[:args.n_logp].reshape((-1,) + shape).astype(np.float32))
    lp_ref, lp_ref_nfe = (runner.logprob(model, ref_path, REFERENCE) if args.n_logp
                          else (None, None))
    rows = []

    def record(label, method, grid, options, on=model):
        x, nfe, _ = runner.sample(on, options)
        logp_error = 0.0  # not measured (--n-logp 0): not plotted
        if args.n_logp:
            lp, lp_nfe = runner.logprob(on, ref_path, options)
            assert nfe == lp_nfe, (label, nfe, lp_nfe)
            logp_error = float(np.mean(np.abs(lp - lp_ref)))
        rows.append({"label": label, "method": method, "grid": grid, "nfe": nfe,
                     "sample_error": sample_error(x, ref), "logp_error": logp_error})

    for method in METHODS:
        for grid in GRIDS:
            for nfe in args.nfes:
                steps = steps_for(method, nfe)
                if steps is None:
                    continue  # not reachable with this method: not plotted
                record(f"{method} {grid}", method, grid,
                       ["--method", method, "--steps", steps, "--grid-kind", grid])
    tuned_model = model
    tune_log = []
    for nfe in args.tuned_nfes:
        # Each tuning adds its solver to a copy of the previous file (an output never overwrites
        # its input).
        tuned_path = os.path.join(runner.work, f"{name}_tuned{nfe}.sif")
        budget = [] if args.tune_budget is None else ["--time-budget", str(args.tune_budget)]
        if args.tune_draws is not None:
            budget += ["--draws", str(args.tune_draws)]
        p = subprocess.run([runner.binary, "tune-solver", tuned_model, "--nfe", str(nfe), "-o",
                            tuned_path, *map(str, runner.cond), *budget],
                           capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError(f"tune-solver {name} --nfe {nfe}: {p.stderr.strip()}")
        tune_log.append(p.stdout)
        tuned_model = tuned_path
        record("tuned", "tuned", "", ["--solver", f"tuned-{nfe}"], tuned_path)
        rows[-1]["model_file"] = tuned_path
    # Time to a sample error of 1e-2: uniform-grid RK4 (the smallest step count that reaches it)
    # against the cheapest configuration measured above that reaches it.
    rk4_steps = None
    for steps in range(1, args.max_rk4_steps + 1):
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
        cpu = {"rk4": [], "best": []}
        for _ in range(3):
            times["rk4"].append(runner.sample(model, ["--method", "rk4", "--steps", rk4_steps],
                                              args.timing_n)[2])
            cpu["rk4"].append(runner.cpu)
            times["best"].append(runner.sample(best_model, best_options(best),
                                               args.timing_n)[2])
            cpu["best"].append(runner.cpu)
        timing = {"rk4_steps": rk4_steps, "rk4_nfe": 4 * rk4_steps,
                  "rk4_seconds": float(np.median(times["rk4"])), "best": best["label"],
                  "best_nfe": best["nfe"], "best_seconds": float(np.median(times["best"])),
                  "rk4_cpu": float(np.median(cpu["rk4"])),
                  "best_cpu": float(np.median(cpu["best"]))}
    plot(name, rows, os.path.join(out_dir, f"few_step_{name}.png"))
    return {"model": name, "label": args.label, "guidance": args.guidance, "n": args.n,
            "n_logp": args.n_logp, "logp_divergence": args.logp_divergence, "reference_nfe": ref_nfe, "reference_logprob_nfe": lp_ref_nfe,
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
    # The log-likelihood panel is empty when it was not measured (--n-logp 0).
    legend_ax = axes[1] if any(r["logp_error"] > 0 for r in rows) else axes[0]
    legend_ax.legend(fontsize=6, ncol=2, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def best_untuned_at(rows, nfe):
    cands = [r for r in rows if r["method"] != "tuned" and r["nfe"] == nfe]
    return min(cands, key=lambda r: r["sample_error"]) if cands else None


def int_list(text):
    return [int(v) for v in text.split(",") if v]


def main():
    ap = argparse.ArgumentParser(description="Few-step sampling benchmark (issue 16).")
    ap.add_argument("binary", help="the siflow CLI")
    ap.add_argument("out_dir", help="where few_step.json and the PNGs go")
    ap.add_argument("models", nargs="*", help="models (default: the point models of "
                    "examples/models/; digits.sif is class-conditional and needs --label)")
    ap.add_argument("--label", type=int, help="class label of every sample, log-likelihood and "
                    "tuned solver (class-conditional models)")
    ap.add_argument("--guidance", type=float, default=1.0, help="guidance weight W with --label")
    ap.add_argument("--n", type=int, default=N, help=f"samples per measurement (default {N})")
    ap.add_argument("--n-logp", type=int, default=N_LOGP, help="reference samples whose "
                    f"log-likelihood error is measured; 0: none (default {N_LOGP})")
    ap.add_argument("--logp-divergence", default="exact", help="logprob's --divergence: exact "
                    "or hutchinson:K (the same seeded probes for the reference and every "
                    "method; default exact)")
    ap.add_argument("--nfes", type=int_list, default=NFES, help="NFEs of the fixed-grid "
                    f"methods (default {','.join(map(str, NFES))})")
    ap.add_argument("--tuned-nfes", type=int_list, default=TUNED_NFES, help="NFEs of the tuned "
                    f"solvers (default {','.join(map(str, TUNED_NFES))})")
    ap.add_argument("--tune-budget", type=float, help="tune-solver --time-budget in seconds "
                    "(default: tune-solver's own)")
    ap.add_argument("--tune-draws", type=int, help="tune-solver --draws (default: "
                    "tune-solver's own)")
    ap.add_argument("--timing-n", type=int, default=TIMING_N, help="samples of the timed runs "
                    f"(default {TIMING_N})")
    ap.add_argument("--max-rk4-steps", type=int, default=64, help="largest uniform RK4 step "
                    "count tried to reach a sample error of 1e-2 (default 64)")
    args = ap.parse_args()
    binary, out_dir = args.binary, args.out_dir
    # By default the point models; the class-conditional digits.sif needs labels (own card).
    bundled = glob.glob(os.path.join(REPO, "examples", "models", "*.sif"))
    models = args.models or sorted(m for m in bundled if os.path.basename(m) != "digits.sif")
    os.makedirs(out_dir, exist_ok=True)
    results = []
    with tempfile.TemporaryDirectory() as work:
        runner = Runner(binary, work, args)
        for model in models:
            print(f"measuring {os.path.basename(model)} ...", file=sys.stderr, flush=True)
            results.append(measure_model(runner, model, out_dir, args))
    with open(os.path.join(out_dir, "few_step.json"), "w") as f:
        json.dump(results, f, indent=1)
    print("| model | tuned @8: NFE, sample error | best untuned @24: config, error | target 1 |"
          " RK4 uniform to 1e-2: NFE, CPU s | best to 1e-2: config, NFE, CPU s | CPU speed-up |"
          " target 2 |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        tuned8 = next((x for x in r["rows"] if x["method"] == "tuned" and x["nfe"] == 8), None)
        b24 = best_untuned_at(r["rows"], 24)
        if tuned8 and b24:
            t1 = "met" if tuned8["sample_error"] <= b24["sample_error"] else "MISSED"
            c1 = (f"8, {tuned8['sample_error']:.3g} | {b24['label']}, "
                  f"{b24['sample_error']:.3g} | {t1}")
        else:
            c1 = "not measured (NFE 8 tuned or 24 untuned not in the run) | | "
        t = r["timing"]
        if t:
            speed = t["rk4_cpu"] / t["best_cpu"]  # CPU seconds: wall time on a shared machine is not
            cells = (f"{t['rk4_nfe']}, {t['rk4_cpu']:.4f} | {t['best']}, {t['best_nfe']}, "
                     f"{t['best_cpu']:.4f} | {speed:.2f}x | {'met' if speed >= 3 else 'MISSED'}")
        else:
            cells = "not reached | | | MISSED"
        print(f"| {r['model']} | {c1} | {cells} |")

if __name__ == "__main__":
    main()
