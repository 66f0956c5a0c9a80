/**
 * The contract between the daemon and a page source.
 *
 * A source is either synchronous (local images: `fetch` returns the data at
 * once) or asynchronous (a page server: `fetch` queues a request and the
 * data arrives later through `poll`). The daemon treats both the same way:
 * a request is "in flight" from `fetch` until its data has been copied in.
 *
 * @module
 */

/** One request: `len` bytes (whole pages) of process `pid` from dump-time address `image`. */
export interface Fetch {
  /** Image pid. */
  pid: number;
  /** Dump-time address of the first page. */
  image: number;
  /** Bytes wanted, a multiple of the page size. */
  len: number;
  /** A fault waits for it (as opposed to background transfer). */
  urgent: boolean;
}

/**
 * Page contents, in memory whose address the kernel can copy from. Valid
 * until `release()`; `bytes.byteLength` may be less than asked for (a page
 * server truncates at the end of its run), never more.
 */
export interface Chunk {
  /** Address of `bytes[0]`, for UFFDIO_COPY. */
  address: number;
  /** The data. */
  bytes: Uint8Array;
  /** Gives the memory back to the source. */
  release(): void;
}

/** A completed asynchronous request, as `poll` reports it. */
export interface Completion<T> {
  /** The `tag` given to `fetch`. */
  tag: T;
  /** The data. */
  chunk: Chunk;
}

/** Counters a source keeps, reported in the daemon's statistics. */
export interface SourceStats {
  /** "local" or "remote". */
  kind: string;
  /** Bytes read from each pages file (local reads). */
  bytesByFile: Record<string, number>;
  /** Bytes answered as zeros because no image covers them. */
  zeroBytes: number;
  /** Requests sent to the page server, and the pages they asked for. */
  remoteRequests?: number;
  remotePages?: number;
  /** Pages the page server sent back. */
  remotePagesReceived?: number;
}

/** Where page contents come from. */
export interface PageSource<T = unknown> {
  /** "local" or "remote". */
  readonly kind: string;
  /**
   * Starts a request. Returns its data now (synchronous sources), or
   * undefined when it will be reported by `poll` with `tag`. Throws when
   * the pages cannot be had (an ImageError, a lost connection).
   */
  fetch(request: Fetch, tag: T): Chunk | undefined;
  /**
   * Whether the source takes another request now. Urgent requests are
   * always taken; background ones wait while enough data is in flight.
   */
  canFetch(urgent: boolean): boolean;
  /** Counters for the statistics. */
  stats(): SourceStats;
  /** Releases files and connections. */
  close(): void;
}
