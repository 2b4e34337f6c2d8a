// Validates Forge manifests with Atlassian's own validator (@forge/manifest, the package `forge
// lint` checks a manifest with): the full validation, then the trigger and agent scope checks
// `forge lint` adds. Each manifest is checked from its own directory, as the CLI runs in the app's.
// Usage: node validate.mjs <manifest.yml>…; exits 1 when any manifest has an error.
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const { ProcessorBuilder, ValidationTypes } = require('@forge/manifest');
// The package exports no package.json: read it beside its entry point (out/index.js).
const packageFile = path.join(path.dirname(require.resolve('@forge/manifest')), '..', 'package.json');
const { version } = JSON.parse(fs.readFileSync(packageFile, 'utf8'));

const TYPES = [
  ValidationTypes.FULL,
  ValidationTypes.PRODUCT_TRIGGER,
  ValidationTypes.AGENT_PRODUCT_CONTEXT,
];

const start = process.cwd();
let failed = false;
for (const manifest of process.argv.slice(2)) {
  process.chdir(path.resolve(start, path.dirname(manifest)));
  const file = path.basename(manifest);
  // The processors share their first steps (file, YAML, schema): one report per finding.
  const findings = new Map();
  for (const type of TYPES) {
    const result = await ProcessorBuilder.instance().withValidation(type).build().process(file);
    for (const e of result.errors ?? []) {
      const where = e.line ? `:${e.line}:${e.column ?? 0}` : '';
      findings.set(`${e.level}${where} ${e.message}`, { ...e, where });
    }
    if (!result.success && (result.errors ?? []).length === 0) {
      findings.set(`error ${type}`, { level: 'error', where: '', message: `${type} validation failed` });
    }
  }
  const errors = [...findings.values()].filter((e) => e.level === 'error').length;
  const warnings = findings.size - errors;
  console.log(`${manifest}: @forge/manifest ${version}: ${errors} errors, ${warnings} warnings`);
  for (const e of findings.values()) {
    console.log(`  ${e.level} ${manifest}${e.where}: ${e.message}`);
  }
  failed ||= errors > 0;
  process.chdir(start);
}
process.exit(failed ? 1 : 0);
