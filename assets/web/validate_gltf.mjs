// Validates one .glb/.gltf with the Khronos glTF-Validator and prints its report as JSON on stdout.
// Usage: node validate_gltf.mjs FILE   (called by core/gltf_validator.py)
import { readFile } from "node:fs/promises";
import path from "node:path";
import validator from "gltf-validator";

const file = process.argv[2];
const data = new Uint8Array(await readFile(file));
const folder = path.dirname(file);
const report = await validator.validateBytes(data, {
  uri: path.basename(file),
  maxIssues: 200,
  externalResourceFunction: (uri) => readFile(path.resolve(folder, decodeURIComponent(uri))).then((b) => new Uint8Array(b)),
});
process.stdout.write(JSON.stringify(report));
