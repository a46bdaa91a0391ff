// SPDX-License-Identifier: Apache-2.0
// The ONNX Runtime Web peer of bench/run.sh --wasm (npm package onnxruntime-web, its WebAssembly
// backend under node): the network exported by peer_torch.py, integrated by classic RK4 in
// JavaScript with one inference call per stage, float32, one thread (ort.env.wasm.numThreads = 1).
//   node peer_ort_web.mjs MODEL.onnx DIM BATCH STEPS REPS   prints "median S min S checksum C"
import { readFileSync } from "node:fs";

import * as ort from "onnxruntime-web";

const [path, dimText, batchText, stepsText, repsText] = process.argv.slice(2);
const dim = Number(dimText), batch = Number(batchText), steps = Number(stepsText);
const reps = Number(repsText);

ort.env.wasm.numThreads = 1;
const session = await ort.InferenceSession.create(readFileSync(path), {
  executionProviders: ["wasm"],
  executionMode: "sequential",
  graphOptimizationLevel: "all",
});

const n = batch * dim;
const z = new Float32Array(n);
for (let i = 0; i < n; ++i) z[i] = Math.fround(Math.sin(0.7 * i + 0.3));
const tBuf = new Float32Array(batch);

async function velocity(x, t) {
  tBuf.fill(t);
  const out = await session.run({
    x: new ort.Tensor("float32", x, [batch, dim]),
    t: new ort.Tensor("float32", tBuf, [batch, 1]),
  });
  return out.v.data;
}

async function rk4() {
  const h = 1 / steps;
  let x = Float32Array.from(z);
  const tmp = new Float32Array(n);
  for (let s = 0; s < steps; ++s) {
    const t0 = s * h;
    const k1 = await velocity(x, t0);
    for (let i = 0; i < n; ++i) tmp[i] = x[i] + 0.5 * h * k1[i];
    const k2 = await velocity(tmp, t0 + 0.5 * h);
    for (let i = 0; i < n; ++i) tmp[i] = x[i] + 0.5 * h * k2[i];
    const k3 = await velocity(tmp, t0 + 0.5 * h);
    for (let i = 0; i < n; ++i) tmp[i] = x[i] + h * k3[i];
    const k4 = await velocity(tmp, t0 + h);
    const next = new Float32Array(n);
    for (let i = 0; i < n; ++i) next[i] = x[i] + (h / 6) * (k1[i] + 2 * k2[i] + 2 * k3[i] + k4[i]);
    x = next;
  }
  return x;
}

const seconds = [];
let x;
for (let r = reps > 1 ? 0 : 1; r <= reps; ++r) {
  const start = process.hrtime.bigint();
  x = await rk4();
  const sec = Number(process.hrtime.bigint() - start) / 1e9;
  if (r > 0) seconds.push(sec);
}
seconds.sort((a, b) => a - b);
let checksum = 0;
for (const v of x) checksum += v;
console.log(`median ${seconds[Math.floor(seconds.length / 2)].toFixed(6)} ` +
            `min ${seconds[0].toFixed(6)} checksum ${checksum.toPrecision(6)}`);
