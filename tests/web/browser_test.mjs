// SPDX-License-Identifier: Apache-2.0
// Drives examples/web/ in headless chromium: serves the built page from 127.0.0.1, opens it with
// ?check=1, and checks what the page POSTs to /report: the golden run's bits equal the native
// x86-64 reference bits (tests/bits/golden_bits.txt), and the page's own SIMD128 run (in a Web
// Worker, with progress, the page's timers still ticking) matches the reference backend computed
// here through the same wrapper within 1e-4. Exits 77 (skipped) when chromium is not installed.
//   node browser_test.mjs SITE_DIR GOLDEN CHROMIUM [SCREENSHOT.png]
// (the screenshot needs node's WebSocket: node >= 22, or node 20 with --experimental-websocket)
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { extname, join, normalize } from "node:path";
import { pathToFileURL } from "node:url";

import { firstDifference, readGolden } from "./golden.mjs";

const [site, goldenPath, chromium, screenshot] = process.argv.slice(2);
if (!site || !goldenPath || !chromium) {
  console.error("usage: node browser_test.mjs SITE_DIR GOLDEN CHROMIUM [SCREENSHOT.png]");
  process.exit(2);
}
if (!existsSync(chromium)) {
  console.log(`SKIPPED: ${chromium} not found (tools/install-deps.sh --wasm installs chromium)`);
  process.exit(77);
}
const TIMEOUT_MS = Number(process.env.T ?? 90000);
const types = { ".html": "text/html", ".js": "text/javascript", ".mjs": "text/javascript",
                ".sif": "application/octet-stream" };

let resolveReport;
const reportArrived = new Promise((resolve) => { resolveReport = resolve; });
let holds = [];  // /hold requests, answered when a report arrives
const server = createServer((req, res) => {
  const url = new URL(req.url, "http://127.0.0.1");
  if (req.method === "POST" && url.pathname === "/report") {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      res.end("ok");
      for (const hold of holds) hold.end("done");
      holds = [];
      resolveReport(JSON.parse(Buffer.concat(chunks).toString("utf8")));
    });
    return;
  }
  if (url.pathname === "/hold") {
    holds.push(res);
    return;
  }
  const path = normalize(join(site, url.pathname === "/" ? "index.html" : url.pathname));
  if (!path.startsWith(normalize(site)) || !existsSync(path)) {
    res.writeHead(404).end();
    return;
  }
  res.writeHead(200, { "Content-Type": types[extname(path)] ?? "application/octet-stream" });
  res.end(readFileSync(path));
});
await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
// A short run: the reference computed below for comparison takes about ten times as long.
const RUN = { n: 600, steps: 20, seed: 1, backend: "simd" };
const page = `http://127.0.0.1:${server.address().port}/index.html?check=1&` +
             new URLSearchParams(RUN).toString();

const profile = mkdtempSync(join(tmpdir(), "siflow-chromium-"));
const flags = ["--headless", "--window-size=900,760", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-crash-reporter",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               `--user-data-dir=${profile}`];
// Its own process group, so that stopping it stops its helper processes too.
const browser = spawn(chromium, [...flags, "--remote-debugging-port=0", page],
                      { stdio: ["ignore", "ignore", "pipe"], detached: true });
let browserLog = "";
browser.stderr.on("data", (d) => { browserLog += d; });
const timeout = new Promise((_, reject) => setTimeout(
  () => reject(new Error(`no report from the page within ${TIMEOUT_MS / 1000} s`)), TIMEOUT_MS));

// A picture of the page after its run, for a person to look at (not checked): the DevTools
// protocol's Page.captureScreenshot, over node's WebSocket (node >= 22, or 20 with
// --experimental-websocket).
async function capture(path) {
  const endpoint = /DevTools listening on ws:\/\/([^/\s]+)\//.exec(browserLog);
  if (!endpoint || typeof WebSocket !== "function") {
    console.log("no screenshot: needs node's WebSocket and chromium's DevTools endpoint");
    return;
  }
  const targets = await (await fetch(`http://${endpoint[1]}/json/list`)).json();
  const target = targets.find((t) => t.type === "page" && t.url.startsWith(page.split("?")[0]));
  const socket = new WebSocket(target.webSocketDebuggerUrl);
  await new Promise((resolve, reject) => { socket.onopen = resolve; socket.onerror = reject; });
  const png = await new Promise((resolve) => {
    socket.onmessage = (event) => resolve(JSON.parse(event.data).result.data);
    socket.send(JSON.stringify({ id: 1, method: "Page.captureScreenshot", params: {} }));
  });
  socket.close();
  writeFileSync(path, Buffer.from(png, "base64"));
  console.log(`screenshot: ${path}`);
}

let failures = 0;
const fail = (message) => { ++failures; console.error(`FAILED: ${message}`); };
try {
  const report = await Promise.race([reportArrived, timeout]);
  if (report.error) throw new Error(`the page reported an error: ${report.error}`);
  // 1. The golden run: the reference backend's bits, as native x86-64 wrote them.
  const golden = readGolden(goldenPath);
  for (const key of ["sample", "sample_logp"]) {
    const expected = golden.get(`checker.${key}`);
    if (!expected) fail(`checker.${key} is not in ${goldenPath}`);
    else if (firstDifference(report.golden[key], expected) >= 0)
      fail(`checker.${key} differs from the native bits at value ` +
           `${firstDifference(report.golden[key], expected)}`);
    else console.log(`ok: checker.${key} is bit-identical to native x86-64 in chromium`);
  }
  // 2. The page's own run: SIMD128 kernels, progress shown, the page responsive, the points
  // those of the reference backend within 1e-4 (the bound of test_wrapper_api.mjs).
  const d = report.display;
  console.log(`page run: ${d.n} points, ${d.steps} steps in ${d.ms.toFixed(1)} ms; ` +
              `${d.progressMessages} progress messages, ${d.ticks} timer ticks meanwhile`);
  if (!d.kernels.some((k) => k.startsWith("simd/wasm_simd128")))
    fail(`the page did not run the SIMD128 kernels: ${d.kernels.join(", ")}`);
  if (d.progressMessages < 1) fail("the page saw no progress message");
  if (d.ticks < 1) fail("the page's timers did not tick while sampling (not responsive)");
  if (!(d.ms > 0)) fail(`the time taken is ${d.ms} ms`);
  if (d.n !== RUN.n || d.steps !== RUN.steps) fail(`the page ran ${d.n} points, ${d.steps} steps`);
  if (d.x.length !== d.n * d.dim) fail(`${d.x.length} values for ${d.n} points of dim ${d.dim}`);
  const wrapper = pathToFileURL(join(site, "siflow.mjs")).href;
  const { loadSiflow } = await import(wrapper);
  const siflow = await loadSiflow();
  const model = siflow.loadModel(readFileSync(join(site, "checkerboard.sif")),
                                 { backend: "reference" });
  const ref = model.sample(RUN.n, { seed: RUN.seed, steps: RUN.steps }).x;
  let worst = 0;
  for (let i = 0; i < ref.length; ++i) {
    const diff = Math.abs(ref[i] - d.x[i]);
    worst = Math.max(worst, Number.isNaN(diff) ? Infinity : diff);
  }
  if (!(worst <= 1e-4)) fail(`the page's points differ from the reference by ${worst}`);
  else console.log(`ok: the page's SIMD128 points are within ${worst.toExponential(2)} of the reference`);
  if (screenshot) await capture(screenshot);
} catch (e) {
  fail(e.message);
  if (browserLog) console.error(`chromium said:\n${browserLog.slice(-2000)}`);
} finally {
  try {
    process.kill(-browser.pid, "SIGTERM");
  } catch {
    // already gone
  }
}
await new Promise((resolve) => {
  if (browser.exitCode !== null || browser.signalCode !== null) resolve();
  else browser.on("exit", resolve);
});
server.close();
rmSync(profile, { recursive: true, force: true });
console.log(failures === 0 ? "browser test passed" : `${failures} failures`);
process.exit(failures === 0 ? 0 : 1);
