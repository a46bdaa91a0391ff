// SPDX-License-Identifier: Apache-2.0
// siflow for JavaScript: a thin ES-module wrapper over the C API compiled to WebAssembly
// (siflow_wasm.mjs, built next to this file). It only marshals: options into the C structs, arrays
// into and out of the module's memory, C errors into exceptions carrying the runtime's message.
//
//   import { loadSiflow } from "./siflow.mjs";
//   const siflow = await loadSiflow();
//   const model = siflow.loadModel(bytes, { backend: "simd" });    // bytes: Uint8Array (.sif)
//   const { x, logp } = model.sample(1000, { seed: 1, steps: 50, logp: true,
//                                            onProgress: (done, total) => true });
//   const logp2 = model.logProb(x, { steps: 50 });                  // Float64Array
//   model.free();
import createSiflowModule from "./siflow_wasm.mjs";

const STATUS = ["OK", "INVALID_ARGUMENT", "INVALID_MODEL", "UNSUPPORTED", "ARENA_TOO_SMALL",
                "OUT_OF_MEMORY", "NUMERICAL_ERROR", "IO_ERROR", "CANCELLED"];
const METHODS = { euler: 0, heun: 1, midpoint: 2, rk4: 3, rk4_38: 4 };
const DIVERGENCE = { none: 0, exact: 1, hutchinson: 2 };
const PROBES = { rademacher: 0, gaussian: 1 };
const BACKENDS = { auto: 0, reference: 1, simd: 2 };
// siflow_web_layout()'s entries, in order (web/siflow_web.c).
const LAYOUT_FIELDS = [
  "planSize", "planMaxBatch", "planDivergence", "planMaxProbes", "planThreads", "planBackend",
  "runSize", "runMethod", "runSteps", "runSeed", "runDivergence", "runProbes", "runProbe",
  "runTime", "runSdeEpsilon", "runProgress", "runProgressUser",
  "errorSize", "errorCode", "errorMessage", "sizeofSizeT"];

/** An error from the runtime: `code` is the C API's status name, `message` the runtime's. */
export class SiflowError extends Error {
  constructor(code, message) {
    super(message);
    this.name = "SiflowError";
    this.code = code;
  }
}

function choice(table, value, what) {
  const key = String(value).toLowerCase();
  if (!(key in table)) {
    throw new SiflowError("INVALID_ARGUMENT",
                          `${what} '${value}' is not one of ${Object.keys(table).join(", ")}`);
  }
  return table[key];
}

function count(value, what, min = 0) {
  if (!Number.isSafeInteger(value) || value < min) {
    throw new SiflowError("INVALID_ARGUMENT", `${what} must be an integer >= ${min}, got ${value}`);
  }
  return value;
}

/** Loads the WebAssembly module; `moduleOptions` go to emscripten's factory. */
export async function loadSiflow(moduleOptions = {}) {
  return new Siflow(await createSiflowModule(moduleOptions));
}

class Siflow {
  constructor(m) {
    this.m = m;
    const at = m._siflow_web_layout() >>> 2;
    this.layout = {};
    LAYOUT_FIELDS.forEach((name, i) => { this.layout[name] = m.HEAPU32[at + i]; });
    if (this.layout.sizeofSizeT !== 4) throw new Error("siflow.mjs expects a wasm32 module");
    this.version = m.UTF8ToString(m._siflow_version());
    this.progressFn = m._siflow_web_progress();
    this.progressHandlers = new Map();  // user token -> callback, while a run is in progress
    m.siflowProgress = (user, done, total) => {
      const handler = this.progressHandlers.get(user);
      return handler ? handler(done, total) !== false : true;
    };
  }

  /**
   * Loads a model from its bytes (Uint8Array or ArrayBuffer) and plans it.
   * options: backend ("auto", "reference", "simd"), maxBatch (rows per chunk, default 256),
   * divergence ("exact" default, "hutchinson" or "none": what log-likelihoods the plan can
   * compute), maxProbes (Hutchinson probes, default 1), threads (1: WebAssembly builds have no
   * thread pool, others are refused by the runtime).
   */
  loadModel(bytes, options = {}) {
    return new Model(this, bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes), options);
  }

  // Runs fn(errorPointer) and throws the C error when it returns nonzero.
  call(what, fn) {
    const m = this.m, L = this.layout;
    const error = m._malloc(L.errorSize);
    try {
      m.HEAPU8.fill(0, error, error + L.errorSize);
      const status = fn(error);
      if (status !== 0) {
        const message = m.UTF8ToString(error + L.errorMessage);
        const full = message.startsWith(`${what}:`) ? message : `${what}: ${message}`;
        throw new SiflowError(STATUS[status] ?? `status ${status}`, full);
      }
    } finally {
      m._free(error);
    }
  }

  // Allocates a zeroed block in the module's memory; released by free().
  alloc(bytes) {
    const p = this.m._malloc(Math.max(bytes, 8));
    if (!p) throw new SiflowError("OUT_OF_MEMORY", `cannot allocate ${bytes} bytes`);
    this.m.HEAPU8.fill(0, p, p + bytes);
    return p;
  }
}

class Model {
  constructor(siflow, bytes, options) {
    this.siflow = siflow;
    const m = siflow.m, L = siflow.layout;
    this.model = 0;
    this.plan = 0;
    // The runtime reads the bytes in place when they are 64-byte aligned, so they live as long
    // as the model.
    this.bytes = siflow.alloc(bytes.length);
    m.HEAPU8.set(bytes, this.bytes);
    const out = siflow.alloc(4);
    const po = siflow.alloc(L.planSize);
    try {
      siflow.call("load", (err) => m._siflow_model_load(this.bytes, bytes.length, 1, out, err));
      this.model = m.HEAPU32[out >>> 2];
      this.dim = m._siflow_model_dim(this.model);
      m._siflow_plan_options_init(po);
      const u32 = (offset, value) => { m.HEAPU32[(po + offset) >>> 2] = value; };
      if (options.maxBatch !== undefined) u32(L.planMaxBatch, count(options.maxBatch, "maxBatch", 1));
      if (options.divergence !== undefined)
        u32(L.planDivergence, choice(DIVERGENCE, options.divergence, "divergence"));
      if (options.maxProbes !== undefined)
        u32(L.planMaxProbes, count(options.maxProbes, "maxProbes", 1));
      if (options.threads !== undefined) u32(L.planThreads, count(options.threads, "threads"));
      if (options.backend !== undefined)
        u32(L.planBackend, choice(BACKENDS, options.backend, "backend"));
      siflow.call("plan", (err) => m._siflow_plan_create(this.model, po, 0, 0, out, err));
      this.plan = m.HEAPU32[out >>> 2];
    } catch (e) {
      this.free();
      throw e;
    } finally {
      m._free(out);
      m._free(po);
    }
  }

  /** The kernel running each graph node, e.g. ["simd/wasm_simd128+silu", ...]. */
  kernels() {
    const m = this.siflow.m, names = [];
    for (let i = 0; ; ++i) {
      const name = m.UTF8ToString(m._siflow_plan_node_kernel(this.plan, i));
      if (!name) return names;
      names.push(name);
    }
  }

  /**
   * n points from the model: { x: Float32Array [n * dim], logp: Float64Array [n] or null }.
   * options: seed (integer, default 0), method ("rk4" default, "euler", "heun", "midpoint",
   * "rk4_38"), steps (default 50), logp (also the log-likelihood of each point), sdeEpsilon
   * (> 0: SDE sampling), onProgress(done, total) (return false to cancel).
   */
  sample(n, options = {}) {
    count(n, "n", 1);
    return this.run("sample", options, (m, ro, err, buffers) => {
      const x = buffers.f32(n * this.dim);
      const logp = options.logp ? buffers.f64(n) : 0;
      const status = m._siflow_sample(this.plan, n, ro, x, logp, err);
      return [status, () => ({ x: buffers.readF32(x, n * this.dim),
                               logp: options.logp ? buffers.readF64(logp, n) : null })];
    });
  }

  /**
   * Log-likelihoods of points x (Float32Array [n * dim]): Float64Array [n].
   * options: method, steps, divergence ("exact" or "hutchinson"), probes, probe ("rademacher",
   * "gaussian"), seed (of the probes), time (negative: the model's end time), onProgress.
   */
  logProb(x, options = {}) {
    const n = this.rows(x);
    return this.run("log_prob", options, (m, ro, err, buffers) => {
      const xp = buffers.f32In(x);
      const logp = buffers.f64(n);
      const status = m._siflow_log_prob(this.plan, n, xp, ro, logp, err);
      return [status, () => buffers.readF64(logp, n)];
    });
  }

  /** Base-space points of data points x (Float32Array [n * dim]); options as logProb's. */
  encode(x, options = {}) {
    const n = this.rows(x);
    return this.run("encode", options, (m, ro, err, buffers) => {
      const xp = buffers.f32In(x);
      const z = buffers.f32(n * this.dim);
      const status = m._siflow_encode(this.plan, n, xp, ro, z, err);
      return [status, () => buffers.readF32(z, n * this.dim)];
    });
  }

  rows(x) {
    if (!(x instanceof Float32Array)) {
      throw new SiflowError("INVALID_ARGUMENT", "points must be a Float32Array");
    }
    if (x.length === 0 || x.length % this.dim !== 0) {
      throw new SiflowError("INVALID_ARGUMENT",
                            `${x.length} values are not whole rows of dim ${this.dim}`);
    }
    return x.length / this.dim;
  }

  // Fills a siflow_run_options from `options`, lets `body` call the C API with it, and returns
  // body's result; every block allocated here is freed on every path.
  run(what, options, body) {
    if (!this.plan) throw new SiflowError("INVALID_ARGUMENT", "the model was freed");
    const siflow = this.siflow, m = siflow.m, L = siflow.layout;
    const blocks = [];
    const alloc = (bytes) => { const p = siflow.alloc(bytes); blocks.push(p); return p; };
    const buffers = {
      f32: (count) => alloc(4 * count),
      f64: (count) => alloc(8 * count),
      f32In: (array) => { const p = alloc(4 * array.length); m.HEAPF32.set(array, p >>> 2); return p; },
      readF32: (p, count) => m.HEAPF32.slice(p >>> 2, (p >>> 2) + count),
      readF64: (p, count) => m.HEAPF64.slice(p >>> 3, (p >>> 3) + count),
    };
    const token = alloc(1);  // a unique address: the progress callback's user pointer
    try {
      const ro = alloc(L.runSize);
      m._siflow_run_options_init(ro);
      const u32 = (offset, value) => { m.HEAPU32[(ro + offset) >>> 2] = value; };
      const f64 = (offset, value) => { m.HEAPF64[(ro + offset) >>> 3] = value; };
      if (options.method !== undefined) u32(L.runMethod, choice(METHODS, options.method, "method"));
      if (options.steps !== undefined) u32(L.runSteps, count(options.steps, "steps", 1));
      if (options.seed !== undefined) {
        const seed = BigInt(options.seed);
        if (seed < 0n || seed >= 1n << 64n) {
          throw new SiflowError("INVALID_ARGUMENT", `seed ${options.seed} is not a uint64`);
        }
        u32(L.runSeed, Number(seed & 0xffffffffn));
        u32(L.runSeed + 4, Number(seed >> 32n));
      }
      if (options.divergence !== undefined)
        u32(L.runDivergence, choice(DIVERGENCE, options.divergence, "divergence"));
      if (options.probes !== undefined) u32(L.runProbes, count(options.probes, "probes", 1));
      if (options.probe !== undefined) u32(L.runProbe, choice(PROBES, options.probe, "probe"));
      if (options.time !== undefined) f64(L.runTime, Number(options.time));
      if (options.sdeEpsilon !== undefined) f64(L.runSdeEpsilon, Number(options.sdeEpsilon));
      if (options.onProgress) {
        u32(L.runProgress, siflow.progressFn);
        u32(L.runProgressUser, token);
        siflow.progressHandlers.set(token, options.onProgress);
      }
      let result;
      siflow.call(what, (err) => {
        const [status, read] = body(m, ro, err, buffers);
        if (status === 0) result = read();
        return status;
      });
      return result;
    } finally {
      siflow.progressHandlers.delete(token);
      for (const p of blocks) m._free(p);
    }
  }

  /** Releases the plan, the model and its bytes; the object is unusable afterwards. */
  free() {
    const m = this.siflow.m;
    if (this.plan) m._siflow_plan_free(this.plan);
    if (this.model) m._siflow_model_free(this.model);
    if (this.bytes) m._free(this.bytes);
    this.plan = this.model = this.bytes = 0;
  }
}
