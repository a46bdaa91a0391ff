// SPDX-License-Identifier: Apache-2.0
// The golden-bits file (tests/bits/golden_bits.txt) for the JavaScript tests: reading it, writing
// arrays as the same hex bit patterns, and computing its quantities through the JavaScript wrapper
// with the options of tests/bits/test_golden_bits.cc.
import { readFileSync } from "node:fs";

/** Map "name.quantity" -> hex string (space-separated bit patterns) of the golden file. */
export function readGolden(path) {
  const golden = new Map();
  for (const line of readFileSync(path, "utf8").split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const space = line.indexOf(" ");
    golden.set(line.slice(0, space), line.slice(space + 1).trim());
  }
  return golden;
}

/** Float32Array or Float64Array as lower-case hex bit patterns, as test_golden_bits writes. */
export function hexBits(array) {
  const out = [];
  if (array instanceof Float32Array) {
    for (const u of new Uint32Array(array.buffer, array.byteOffset, array.length))
      out.push(u.toString(16).padStart(8, "0"));
  } else {
    for (const u of new BigUint64Array(array.buffer, array.byteOffset, array.length))
      out.push(u.toString(16).padStart(16, "0"));
  }
  return out.join(" ");
}

/** The index of the first value where two hex strings differ, or -1 when equal. */
export function firstDifference(a, b) {
  if (a === b) return -1;
  const x = a.split(" "), y = b.split(" ");
  for (let i = 0; i < Math.max(x.length, y.length); ++i) if (x[i] !== y[i]) return i;
  return -1;
}

export const GOLDEN_SEED = 20261128;
export const GOLDEN_ROWS = 12;

/**
 * test_golden_bits' quantities for one model through the wrapper (reference backend): a Map
 * "name.quantity" -> hex. SDE sampling is attempted only when `withSde`.
 */
export function computeGolden(siflow, name, bytes, withSde) {
  const out = new Map();
  const model = siflow.loadModel(bytes, { backend: "reference", maxBatch: 8, maxProbes: 2 });
  try {
    const { x, logp } = model.sample(GOLDEN_ROWS, { seed: GOLDEN_SEED, steps: 16, logp: true });
    out.set(`${name}.sample`, hexBits(x));
    out.set(`${name}.sample_logp`, hexBits(logp));
    out.set(`${name}.encode`, hexBits(model.encode(x, { steps: 16, method: "rk4_38" })));
    out.set(`${name}.logprob_exact`, hexBits(model.logProb(x, { steps: 16, method: "heun" })));
    out.set(`${name}.logprob_hutchinson`, hexBits(model.logProb(x, {
      steps: 16, method: "heun", divergence: "hutchinson", probes: 2, probe: "gaussian", seed: 5,
    })));
    if (withSde) {
      const sde = model.sample(GOLDEN_ROWS, { seed: GOLDEN_SEED, steps: 16, sdeEpsilon: 0.5 });
      out.set(`${name}.sde_sample`, hexBits(sde.x));
    }
  } finally {
    model.free();
  }
  return out;
}
