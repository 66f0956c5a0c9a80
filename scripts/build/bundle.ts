/**
 * Bundling lazyd into one ES module with esbuild (the bundler the design
 * names, and the one `deno bundle` uses). npm packages such as
 * @bufbuild/protobuf are resolved from node_modules and inlined; `node:`
 * builtins and the `Deno` global stay as they are, so the result needs
 * nothing but a Deno runtime.
 *
 * @module
 */

import { join } from "node:path";

/** Options of {@linkcode bundle}. */
export interface BundleOptions {
  /** The repository root: esbuild runs there, so paths in the bundle's
   * comments are relative and the output does not depend on the checkout. */
  root: string;
  /** The esbuild executable. */
  esbuild?: string;
}

/**
 * Bundles `entry` into `outfile` (written atomically). Fails when the
 * result would behave differently from running `entry` directly: in a
 * bundle every module shares the bundle's `import.meta`, so a second
 * `import.meta.main` would be true too.
 */
export async function bundle(
  entry: string,
  outfile: string,
  options: BundleOptions,
): Promise<void> {
  const esbuild = options.esbuild ??
    join(options.root, "node_modules", "esbuild", "bin", "esbuild");
  const tmp = `${outfile}.${Deno.pid}.tmp`;
  const out = await new Deno.Command(esbuild, {
    args: [
      entry,
      "--bundle",
      "--format=esm",
      "--platform=neutral",
      "--target=esnext",
      // Neutral platform resolves package.json "exports" with the
      // "import" condition; main fields cover packages without exports.
      "--main-fields=module,main",
      "--external:node:*",
      "--charset=utf8",
      "--log-level=warning",
      `--outfile=${tmp}`,
    ],
    cwd: options.root,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const err = new TextDecoder().decode(out.stderr).trim();
  if (!out.success) throw new Error(`esbuild failed:\n${err}`);
  if (err) console.error(err);
  const code = await Deno.readTextFile(tmp);
  const mains = code.match(/\bimport\.meta\.main\b/g)?.length ?? 0;
  if (mains > 1) {
    await Deno.remove(tmp);
    throw new Error(
      `the bundle of ${entry} tests import.meta.main ${mains} times; in a ` +
        "bundle that is true in every module, so only the entry may test it",
    );
  }
  const other = code.match(/\bimport\.meta\.(?!main\b)\w+/g);
  if (other) {
    console.error(
      `warning: the bundle uses ${[...new Set(other)].join(", ")}, which ` +
        "now refer to the bundle file, not to the original modules",
    );
  }
  await Deno.rename(tmp, outfile);
}
