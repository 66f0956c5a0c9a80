/**
 * Where pages come from: local image files (and, later, a remote page
 * server), behind one {@linkcode PageSource} interface.
 *
 * @module
 */
export { LocalSource, type ReadRequest } from "./local.ts";
export { PS, type RemoteOptions, RemoteSource, SourceError } from "./remote.ts";
export type {
  Chunk,
  Completion,
  Fetch,
  PageSource,
  SourceStats,
} from "./types.ts";
export {
  TlsError,
  type TlsLoaded,
  type TlsOptions,
  TlsSession,
  type TlsStep,
} from "./tls.ts";
