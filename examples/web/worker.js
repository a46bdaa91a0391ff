// SPDX-License-Identifier: Apache-2.0
// The example page's Web Worker: loads siflow's WebAssembly module and the model, samples on
// request and posts progress and results back, so the page never blocks while the flow runs.
import { loadSiflow } from "./siflow.mjs";

const siflowReady = loadSiflow();
let bytes = null;
const models = new Map();  // plan options as JSON -> model

self.onmessage = async ({ data }) => {
  const { id, n, seed, steps, backend, maxBatch, logp } = data;
  try {
    const siflow = await siflowReady;
    if (!bytes) bytes = new Uint8Array(await (await fetch("checkerboard.sif")).arrayBuffer());
    const key = JSON.stringify({ backend, maxBatch });
    if (!models.has(key)) models.set(key, siflow.loadModel(bytes, { backend, maxBatch }));
    const model = models.get(key);
    let lastPost = 0;
    const start = performance.now();
    const result = model.sample(n, {
      seed, steps, logp,
      onProgress: (done, total) => {
        const now = performance.now();
        if (done === total || now - lastPost > 30) {  // ~30 updates a second at most
          lastPost = now;
          self.postMessage({ id, type: "progress", done, total });
        }
        return true;
      },
    });
    const ms = performance.now() - start;
    self.postMessage({ id, type: "done", x: result.x, logp: result.logp, ms, dim: model.dim,
                       kernels: model.kernels(), version: siflow.version },
                     [result.x.buffer].concat(result.logp ? [result.logp.buffer] : []));
  } catch (e) {
    self.postMessage({ id, type: "error", code: e.code ?? "ERROR", message: e.message ?? String(e) });
  }
};
