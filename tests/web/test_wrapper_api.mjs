// SPDX-License-Identifier: Apache-2.0
// The JavaScript wrapper's behaviour beyond bits: the simd backend runs the SIMD128 kernels and
// agrees with the reference within the documented whole-network bound, progress reaches every
// chunk and step and can cancel, threads > 1 and bad input are refused with the runtime's message.
//   node test_wrapper_api.mjs SIFLOW_MJS EVERY_OP_MODEL CHECKERBOARD_MODEL
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

const [wrapper, everyOpPath, checkerboardPath] = process.argv.slice(2);
if (!wrapper || !everyOpPath || !checkerboardPath) {
  console.error("usage: node test_wrapper_api.mjs SIFLOW_MJS EVERY_OP_MODEL CHECKERBOARD_MODEL");
  process.exit(2);
}
const { loadSiflow, SiflowError } = await import(pathToFileURL(wrapper).href);
const siflow = await loadSiflow();
const everyOp = readFileSync(everyOpPath);
const checkerboard = readFileSync(checkerboardPath);
const tests = [];
const test = (name, fn) => tests.push([name, fn]);

function maxAbsDiff(a, b) {
  assert.equal(a.length, b.length);
  let worst = 0;
  for (let i = 0; i < a.length; ++i) worst = Math.max(worst, Math.abs(a[i] - b[i]));
  return worst;
}

function throwsSiflow(fn, code, fragment) {
  assert.throws(fn, (e) => {
    assert.ok(e instanceof SiflowError, `expected a SiflowError, got ${e}`);
    assert.equal(e.code, code, e.message);
    assert.ok(e.message.includes(fragment), `'${e.message}' does not name '${fragment}'`);
    return true;
  });
}

test("the simd backend runs the SIMD128 kernels and agrees with the reference within 1e-5", () => {
  // The documented whole-network bound of docs/architecture.md (test_network.cc: 1e-5 on the
  // every-op network for velocities, samples and log-likelihoods).
  const ref = siflow.loadModel(everyOp, { backend: "reference" });
  const simd = siflow.loadModel(everyOp, { backend: "simd" });
  assert.ok(simd.kernels().some((k) => k.startsWith("simd/wasm_simd128")), simd.kernels().join());
  const options = { seed: 3, steps: 8, logp: true };
  const a = ref.sample(64, options), b = simd.sample(64, options);
  const dx = maxAbsDiff(a.x, b.x), dl = maxAbsDiff(a.logp, b.logp);
  assert.ok(dx <= 1e-5 && dl <= 1e-5, `samples differ by ${dx}, log p by ${dl}`);
  const hutch = { steps: 8, divergence: "hutchinson", probes: 2, seed: 9 };
  const refWide = siflow.loadModel(everyOp, { backend: "reference", maxProbes: 2 });
  const simdWide = siflow.loadModel(everyOp, { backend: "simd", maxProbes: 2 });
  const dh = maxAbsDiff(refWide.logProb(a.x, hutch), simdWide.logProb(a.x, hutch));
  assert.ok(dh <= 1e-5, `Hutchinson log p differs by ${dh}`);
  console.log(`  every-op network, wasm_simd128 vs reference: samples ${dx.toExponential(2)}, ` +
              `log p ${dl.toExponential(2)}, Hutchinson ${dh.toExponential(2)}`);
  // The bundled checkerboard (3 x 256 SiLU), 50 RK4 steps, has no documented bound: measured
  // 3e-6; 1e-4 leaves room for other engines while a wrong kernel moves points by O(0.1).
  const cref = siflow.loadModel(checkerboard, { backend: "reference" });
  const csimd = siflow.loadModel(checkerboard, { backend: "simd" });
  const c = maxAbsDiff(cref.sample(256, { seed: 1 }).x, csimd.sample(256, { seed: 1 }).x);
  console.log(`  checkerboard, 50 RK4 steps: samples differ by at most ${c.toExponential(2)}`);
  assert.ok(c <= 1e-4, `checkerboard samples differ by ${c}`);
  for (const m of [ref, simd, refWide, simdWide, cref, csimd]) m.free();
});

test("progress reports every chunk and step, in order, ending at the total", () => {
  const model = siflow.loadModel(everyOp, { backend: "simd", maxBatch: 8 });
  const calls = [];
  model.sample(20, { steps: 5, onProgress: (done, total) => { calls.push([done, total]); } });
  // 3 chunks (8 + 8 + 4 rows) x 5 steps, each reporting the rows done so far.
  assert.equal(calls.length, 15);
  assert.ok(calls.every(([, total]) => total === 100));
  for (let i = 1; i < calls.length; ++i) assert.ok(calls[i][0] > calls[i - 1][0]);
  assert.equal(calls[calls.length - 1][0], 100);
  model.free();
});

test("a progress callback returning false cancels with CANCELLED; the model stays usable", () => {
  const model = siflow.loadModel(everyOp, { maxBatch: 8 });
  let calls = 0;
  throwsSiflow(() => model.sample(20, { steps: 5, onProgress: () => ++calls < 3 }), "CANCELLED",
               "cancelled by the progress callback");
  assert.equal(calls, 3);
  assert.equal(model.sample(4, { steps: 2 }).x.length, 4 * model.dim);
  model.free();
});

test("threads > 1 are refused by name: the WebAssembly build has no thread pool", () => {
  throwsSiflow(() => siflow.loadModel(everyOp, { threads: 2 }), "UNSUPPORTED", "no thread pool");
});

test("bad bytes, options and arrays are refused with the runtime's message", () => {
  throwsSiflow(() => siflow.loadModel(new Uint8Array(100)), "INVALID_MODEL", "load");
  const truncated = everyOp.subarray(0, everyOp.length - 1000);
  assert.throws(() => siflow.loadModel(truncated), SiflowError);
  throwsSiflow(() => siflow.loadModel(everyOp, { backend: "cuda" }), "INVALID_ARGUMENT", "backend");
  const model = siflow.loadModel(everyOp);
  throwsSiflow(() => model.sample(0), "INVALID_ARGUMENT", "n must be");
  throwsSiflow(() => model.sample(2, { method: "rk5" }), "INVALID_ARGUMENT", "method 'rk5'");
  throwsSiflow(() => model.logProb(new Float32Array(model.dim + 1)), "INVALID_ARGUMENT",
               "whole rows");
  throwsSiflow(() => model.logProb(new Float32Array(model.dim).fill(NaN)), "INVALID_ARGUMENT",
               "log_prob");
  throwsSiflow(() => model.sample(2, { seed: -1 }), "INVALID_ARGUMENT", "not a uint64");
  model.free();
  throwsSiflow(() => model.sample(2), "INVALID_ARGUMENT", "freed");
});

test("a 2^64 - 1 seed reaches the runtime whole: it differs from seed 2^32 - 1", () => {
  const model = siflow.loadModel(everyOp);
  const a = model.sample(2, { seed: 2n ** 64n - 1n, steps: 2 }).x;
  const b = model.sample(2, { seed: 2n ** 32n - 1n, steps: 2 }).x;
  const c = model.sample(2, { seed: 2n ** 64n - 1n, steps: 2 }).x;
  assert.deepEqual(a, c);
  assert.notDeepEqual(a, b);
  model.free();
});

let failures = 0;
for (const [name, fn] of tests) {
  try {
    fn();
    console.log(`ok: ${name}`);
  } catch (e) {
    ++failures;
    console.error(`FAILED: ${name}\n  ${e.stack ?? e}`);
  }
}
console.log(`${tests.length - failures} of ${tests.length} passed`);
process.exit(failures === 0 ? 0 : 1);
