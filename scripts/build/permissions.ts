/**
 * The Deno flags lazyd runs with, declared once. `deno compile` bakes them
 * into dist/lazyd; the self-contained launcher passes them to `deno run`;
 * `deno task lazyd` can use them too:
 * `deno run $(deno run scripts/build/permissions.ts) mod.ts`.
 *
 * @module
 */

/**
 * What lazyd needs: everything. It calls libc through FFI (userfaultfd,
 * ioctl, mmap, sockets), which no finer permission could contain anyway,
 * and Deno grants reads of /proc (how restored processes are found and
 * watched) only with full access.
 */
export const PERMISSIONS: readonly string[] = ["--allow-all"];

/**
 * How the bundle is loaded, in both modes: it is one self-sufficient ES
 * module, so nothing is looked up (no deno.json, lock file, remote or npm
 * module) and nothing is ever downloaded, and a missing permission throws
 * instead of prompting.
 */
export const LOAD_FLAGS: readonly string[] = [
  "--no-config",
  "--no-lock",
  "--no-remote",
  "--no-npm",
  "--no-prompt",
];

/**
 * The `deno run` arguments that precede the bundle's path. `--ext=js`
 * because the launcher may hand Deno an extension-less /proc/self/fd/N.
 */
export const RUN_ARGS: readonly string[] = [
  "run",
  ...LOAD_FLAGS,
  ...PERMISSIONS,
  "--ext=js",
];

if (import.meta.main) console.log([...LOAD_FLAGS, ...PERMISSIONS].join(" "));
