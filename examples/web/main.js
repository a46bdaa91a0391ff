// SPDX-License-Identifier: Apache-2.0
// The example page's script: sends sampling requests to the worker, shows its progress, draws
// the points and the time taken. With ?check=1 (tests/web/browser_test.mjs) it also samples the
// golden configuration and POSTs both runs' results to /report for the test server to check.
const $ = (id) => document.getElementById(id);
const worker = new Worker("worker.js", { type: "module" });
const pending = new Map();
let nextId = 0;

// Runs one request in the worker; onProgress(done, total) sees its progress messages.
function sample(request, onProgress) {
  const id = nextId++;
  return new Promise((resolve, reject) => {
    pending.set(id, { resolve, reject, onProgress });
    worker.postMessage({ id, ...request });
  });
}
worker.onmessage = ({ data }) => {
  const job = pending.get(data.id);
  if (data.type === "progress") return job.onProgress(data.done, data.total);
  pending.delete(data.id);
  if (data.type === "done") job.resolve(data);
  else job.reject(new Error(`${data.code}: ${data.message}`));
};

function draw(x, dim) {
  const canvas = $("plot"), ctx = canvas.getContext("2d");
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  // The checkerboard lives in [-4, 4]^2; other models show their first two coordinates.
  const scale = canvas.width / 8;
  ctx.fillStyle = "rgba(20, 60, 150, 0.6)";
  for (let i = 0; i + 1 < x.length; i += dim) {
    ctx.fillRect((x[i] + 4) * scale - 1.5, (4 - x[i + 1]) * scale - 1.5, 3, 3);
  }
}

// Samples with the controls' settings, showing progress; resolves to the worker's result and
// the number of main-thread timer ticks seen meanwhile (the page stayed responsive if > 0).
async function run(request) {
  $("run").disabled = true;
  $("progress").value = 0;
  $("status").textContent = `Sampling ${request.n} points…`;
  let ticks = 0, progressMessages = 0;
  const ticker = setInterval(() => { ++ticks; }, 10);
  try {
    const result = await sample(request, (done, total) => {
      ++progressMessages;
      $("progress").value = done / total;
      $("status").textContent = `Sampling ${request.n} points… ${Math.round(100 * done / total)}%`;
    });
    $("progress").value = 1;
    $("status").textContent = `${request.n} points, ${request.steps} RK4 steps: ` +
                              `${result.ms.toFixed(1)} ms in WebAssembly (siflow ${result.version})`;
    $("kernels").textContent = `kernels: ${[...new Set(result.kernels)].join(", ")}`;
    draw(result.x, result.dim);
    return { result, ticks, progressMessages };
  } catch (e) {
    $("status").textContent = `Error: ${e.message}`;
    throw e;
  } finally {
    clearInterval(ticker);
    $("run").disabled = false;
  }
}

function controls() {
  return { n: Number($("n").value), steps: Number($("steps").value), seed: Number($("seed").value),
           backend: $("backend").value, maxBatch: 256, logp: false };
}

const hex = (array) => Array.from(array instanceof Float32Array
  ? new Uint32Array(array.buffer) : new BigUint64Array(array.buffer),
  (u) => u.toString(16).padStart(array instanceof Float32Array ? 8 : 16, "0")).join(" ");

async function check() {
  // Held open by the test server until it has the report: a headless browser taking a
  // screenshot with a virtual time budget waits for pending requests, so it shows the result.
  fetch("hold").catch(() => {});
  const report = {};
  try {
    // The golden configuration of tests/bits/test_golden_bits.cc on the reference backend.
    const golden = await sample({ n: 12, seed: 20261128, steps: 16, backend: "reference",
                                  maxBatch: 8, logp: true }, () => {});
    report.golden = { sample: hex(golden.x), sample_logp: hex(golden.logp) };
    // The page's own run, as a visitor starts it.
    const shown = await run(controls());
    report.display = { n: controls().n, steps: controls().steps, dim: shown.result.dim,
                       ms: shown.result.ms, ticks: shown.ticks,
                       progressMessages: shown.progressMessages, kernels: shown.result.kernels,
                       x: Array.from(shown.result.x) };
  } catch (e) {
    report.error = String(e.message ?? e);
  }
  await fetch("report", { method: "POST", body: JSON.stringify(report) });
}

$("controls").addEventListener("submit", (event) => {
  event.preventDefault();
  run(controls()).catch(() => {});
});
// ?n=, ?steps=, ?seed=, ?backend= preset the controls.
const query = new URLSearchParams(location.search);
for (const id of ["n", "steps", "seed", "backend"]) if (query.has(id)) $(id).value = query.get(id);
if (query.has("check")) check();
else run(controls()).catch(() => {});
