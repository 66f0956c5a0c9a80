/**
 * lazyd: a userfaultfd post-copy page daemon for CRIU, a drop-in
 * replacement for `criu lazy-pages`.
 *
 * Run as a program, this module is the `lazyd` command line.
 *
 * @module
 */
import { main } from "./src/cli.ts";

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
