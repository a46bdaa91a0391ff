// SPDX-License-Identifier: Apache-2.0
// The JavaScript wrapper over the WebAssembly build gives the same bits as native x86-64: every
// quantity of tests/bits/golden_bits.txt (samples with log-likelihoods, encodings, exact and
// Hutchinson log-likelihoods, SDE samples), computed through siflow.mjs on the reference backend.
//   node test_wrapper_bits.mjs SIFLOW_MJS GOLDEN NAME=MODEL...
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

import { computeGolden, firstDifference, readGolden } from "./golden.mjs";

const [wrapper, goldenPath, ...models] = process.argv.slice(2);
if (!wrapper || !goldenPath || models.length === 0) {
  console.error("usage: node test_wrapper_bits.mjs SIFLOW_MJS GOLDEN NAME=MODEL...");
  process.exit(2);
}
const { loadSiflow } = await import(pathToFileURL(wrapper).href);
const siflow = await loadSiflow();
const golden = readGolden(goldenPath);
let compared = 0, failures = 0;
for (const pair of models) {
  const [name, path] = pair.split("=");
  const computed = computeGolden(siflow, name, readFileSync(path), golden.has(`${name}.sde_sample`));
  for (const [key, hex] of computed) {
    if (!golden.has(key)) {
      console.error(`${key}: not in ${goldenPath}`);
      ++failures;
      continue;
    }
    ++compared;
    const at = firstDifference(hex, golden.get(key));
    if (at >= 0) {
      console.error(`${key} differs from the golden bits at value ${at}`);
      ++failures;
    }
  }
}
// Every golden line of the named models must have been computed.
const names = new Set(models.map((pair) => pair.split("=")[0]));
const expected = [...golden.keys()].filter((key) => names.has(key.split(".")[0])).length;
if (compared !== expected) {
  console.error(`computed ${compared} of the ${expected} golden quantities of these models`);
  ++failures;
}
console.log(`${compared} quantities compared bit for bit through siflow.mjs, ${failures} failures`);
process.exit(failures === 0 ? 0 : 1);
