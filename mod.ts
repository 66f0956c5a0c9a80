/**
 * lazyd: a userfaultfd post-copy page daemon for CRIU, a drop-in
 * replacement for `criu lazy-pages`.
 *
 * Run as a program, this module is the `lazyd` command line. The daemon's
 * uffd thread is a Worker started from this same module (so that a bundled
 * or compiled lazyd needs no second file): loaded in a worker, it runs the
 * worker's entry point instead.
 *
 * @module
 */
import { main } from "./src/cli.ts";
import { inWorker, workerMain } from "./src/daemon/mod.ts";

export { main } from "./src/cli.ts";
export { inspect, type InspectReport } from "./src/inspect.ts";

if (import.meta.main) {
  if (inWorker()) workerMain();
  else Deno.exit(await main(Deno.args));
}
