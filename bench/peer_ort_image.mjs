// SPDX-License-Identifier: Apache-2.0
// The ONNX Runtime peer of bench/run_image.sh (npm package onnxruntime-node): the image net
// exported by bench/unet28.py (x [B, 1, S, S], t [B, 1]), sampled from the same base points by
// Euler or classic RK4 in JavaScript with one session.run per evaluation, float32, intra-op
// threads pinned, sequential execution.
//   node peer_ort_image.mjs MODEL.onnx SIZE BATCH STEPS REPS THREADS euler|rk4
// prints "median S min S cpu_median S checksum C rss_kib K" (cpu: the process's CPU seconds)
import * as ort from "onnxruntime-node";

const [path, sizeText, batchText, stepsText, repsText, threadsText, method] =
    process.argv.slice(2);
const size = Number(sizeText), batch = Number(batchText), steps = Number(stepsText);
const reps = Number(repsText), threads = Number(threadsText);
const dim = size * size;

const session = await ort.InferenceSession.create(path, {
  intraOpNumThreads: threads,
  interOpNumThreads: 1,
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
    x: new ort.Tensor("float32", x, [batch, 1, size, size]),
    t: new ort.Tensor("float32", tBuf, [batch, 1]),
  });
  return out.v.data;
}

async function euler() {
  const h = 1 / steps;
  const x = Float32Array.from(z);
  for (let s = 0; s < steps; ++s) {
    const v = await velocity(x, s * h);
    for (let i = 0; i < n; ++i) x[i] += h * v[i];
  }
  return x;
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

const seconds = [], cpu = [];
let x;
for (let r = reps > 1 ? 0 : 1; r <= reps; ++r) {
  const cpuStart = process.cpuUsage();
  const start = process.hrtime.bigint();
  x = method === "euler" ? await euler() : await rk4();
  const sec = Number(process.hrtime.bigint() - start) / 1e9;
  const used = process.cpuUsage(cpuStart);
  if (r > 0) seconds.push(sec), cpu.push((used.user + used.system) / 1e6);
}
seconds.sort((a, b) => a - b);
cpu.sort((a, b) => a - b);
let checksum = 0;
for (const v of x) checksum += v;
const rss = Math.round(process.resourceUsage().maxRSS);
console.log(`median ${seconds[Math.floor(seconds.length / 2)].toFixed(6)} ` +
            `min ${seconds[0].toFixed(6)} cpu_median ${cpu[Math.floor(cpu.length / 2)].toFixed(6)} checksum ${checksum.toPrecision(6)} rss_kib ${rss}`);
