/**
 * The contract between the daemon and a page source.
 *
 * @module
 */

/** One read: `into.byteLength` bytes (whole pages) from dump-time address `image`. */
export interface ReadRequest {
  /** Dump-time address of the first page. */
  image: number;
  /** Destination; its length is the amount to read. */
  into: Uint8Array;
}

/** Counters a source keeps, reported in the daemon's statistics. */
export interface SourceStats {
  /** "local" or "remote". */
  kind: string;
  /** Bytes read from each pages file (local sources). */
  bytesByFile: Record<string, number>;
  /** Bytes answered as zeros because no image covers them. */
  zeroBytes: number;
}

/** Where page contents come from. */
export interface PageSource {
  /** "local" or "remote". */
  readonly kind: string;
  /** Fills `request.into` synchronously, or throws. */
  read(pid: number, request: ReadRequest): void;
  /** Counters for the statistics. */
  stats(): SourceStats;
  /** Releases files and connections. */
  close(): void;
}
