/**
 * The Deno flags lazyd runs with, declared once. `deno compile` bakes them
 * into dist/lazyd; the self-contained launcher passes them to `deno run`;
 * `deno task lazyd`, the tests and the benchmarks run `mod.ts` with
 * {@linkcode PERMISSIONS} and {@linkcode V8_FLAGS} as well.
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
 * V8 compiles a function the first time it runs, and the first page fault
 * of a restore runs the whole fault path for the first time while `criu
 * restore` waits for its answer. `--no-lazy` compiles everything when the
 * module loads, before the socket exists: no measurable start-up cost here
 * (Deno caches the compiled code), and in the emulated guest of the delay
 * benchmark restore went from ~565 to ~390 ms (criu lazy-pages: ~360-465).
 */
export const V8_FLAGS: readonly string[] = ["--v8-flags=--no-lazy"];

/**
 * The `deno run` arguments that precede the bundle's path. `--ext=js`
 * because the launcher may hand Deno an extension-less /proc/self/fd/N.
 */
export const RUN_ARGS: readonly string[] = [
  "run",
  ...LOAD_FLAGS,
  ...PERMISSIONS,
  ...V8_FLAGS,
  "--ext=js",
];

if (import.meta.main) {
  console.log([...LOAD_FLAGS, ...PERMISSIONS, ...V8_FLAGS].join(" "));
}
