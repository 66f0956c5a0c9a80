/**
 * Builds the executables tests run, once per test process. Each build
 * reuses an up-to-date output (same bundle, runtime and launcher hashes)
 * and the cached compressed runtime, so a repeated build takes seconds.
 *
 * @module
 */

import { join } from "node:path";
import { build, ROOT } from "../../scripts/build.ts";

let real: Promise<string> | undefined;
let fixture: Promise<string> | undefined;

/**
 * `deno task build`'s dist/lazyd, built from mod.ts once per process;
 * resolves with its absolute path. For end-to-end tests of the real program.
 */
export function buildOnce(): Promise<string> {
  real ??= build().then(() => join(ROOT, "dist", "lazyd"));
  return real;
}

/**
 * The same build of the stand-in program tests/build/fixtures/entry.ts,
 * always in the self-contained mode whose launcher these tests exercise.
 */
export function buildFixture(): Promise<string> {
  const out = join(ROOT, ".cache", "build-test", "lazyd");
  fixture ??= build({
    entry: "tests/build/fixtures/entry.ts",
    out,
    mode: "self-contained",
  }).then(() => out);
  return fixture;
}

/** True when the real CLI exists (the entry mod.ts imports it). */
export function haveCli(): boolean {
  try {
    Deno.statSync(join(ROOT, "src", "cli.ts"));
    return true;
  } catch {
    return false;
  }
}
