/**
 * Where pages come from: local image files (and, later, a remote page
 * server), behind one {@linkcode PageSource} interface.
 *
 * @module
 */
export { LocalSource } from "./local.ts";
export type { PageSource, ReadRequest, SourceStats } from "./types.ts";
