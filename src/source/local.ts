/**
 * Pages from local image files: `pages-<n>.img` of the images directory and
 * of its parent chain, located with the image layer's pagemap lookup.
 *
 * @module
 */
import {
  allocPages,
  closeFd,
  openRead,
  type PageBuffer,
  pread,
  SysError,
} from "../../ffi/mod.ts";
import {
  type ImageDir,
  ImageError,
  locatePages,
  PAGE_SIZE,
} from "../images/mod.ts";
import type { Chunk, Fetch, PageSource, SourceStats } from "./types.ts";

/** One read: `into.byteLength` bytes (whole pages) from dump-time address `image`. */
export interface ReadRequest {
  /** Dump-time address of the first page. */
  image: number;
  /** Destination; its length is the amount to read. */
  into: Uint8Array;
}

/**
 * Reads page contents straight from image files with `pread`, one call per
 * contiguous segment, into the caller's (page-aligned) buffer. File
 * descriptors are opened on first use and kept until {@linkcode close}.
 */
export class LocalSource implements PageSource {
  readonly kind = "local";
  readonly #dir: ImageDir;
  #buf: PageBuffer | undefined;
  readonly #fds = new Map<string, number>();
  readonly #bytesByFile = new Map<string, number>();
  #zeroBytes = 0;

  /** A source over `dir` and its parents. */
  constructor(dir: ImageDir) {
    this.#dir = dir;
  }

  /**
   * Reads a request synchronously into the source's own page-aligned
   * buffer (one buffer: the daemon copies each chunk in before it fetches
   * the next). Throws ImageError.
   */
  fetch(request: Fetch): Chunk {
    if (!this.#buf || this.#buf.size < request.len) {
      this.#buf?.free();
      // Kept for the source's lifetime: the kernel reads from its address.
      this.#buf = allocPages(Math.max(request.len, 1 << 20));
    }
    const bytes = this.#buf.bytes.subarray(0, request.len);
    this.read(request.pid, { image: request.image, into: bytes });
    return { address: this.#buf.address, bytes, release: () => {} };
  }

  /** Always: reads are synchronous. */
  canFetch(): boolean {
    return true;
  }

  /**
   * Fills `into` with the memory of image process `pid` at dump-time
   * address `image`. Throws ImageError when the images cannot supply it
   * (missing or short pages file, lazy pages without local data).
   */
  read(pid: number, request: ReadRequest): void {
    const { image, into } = request;
    const segments = locatePages(this.#dir, {
      pid,
      addr: image,
      pages: into.byteLength / PAGE_SIZE,
    });
    let off = 0;
    for (const s of segments) {
      const len = s.pages * PAGE_SIZE;
      const part = into.subarray(off, off + len);
      if (s.zero) {
        part.fill(0);
        this.#zeroBytes += len;
      } else {
        let n: number;
        try {
          n = pread(this.#fd(s.file), part, { offset: s.offset });
        } catch (e) {
          if (!(e instanceof SysError)) throw e;
          throw new ImageError(
            { file: s.file, offset: s.offset },
            `cannot read ${len} bytes: ${e.message}`,
          );
        }
        if (n !== len) {
          throw new ImageError(
            { file: s.file, offset: s.offset + n },
            `pages file too short: ${len - n} of ${len} bytes missing`,
          );
        }
        this.#bytesByFile.set(
          s.file,
          (this.#bytesByFile.get(s.file) ?? 0) + len,
        );
      }
      off += len;
    }
  }

  /** Bytes read per pages file, and bytes answered as zeros. */
  stats(): SourceStats {
    return {
      kind: this.kind,
      bytesByFile: Object.fromEntries(this.#bytesByFile),
      zeroBytes: this.#zeroBytes,
    };
  }

  /** Closes the pages files and frees the buffer. */
  close(): void {
    this.#buf?.free();
    this.#buf = undefined;
    for (const fd of this.#fds.values()) closeFd(fd);
    this.#fds.clear();
  }

  #fd(file: string): number {
    let fd = this.#fds.get(file);
    if (fd === undefined) {
      try {
        fd = openRead(file);
      } catch (e) {
        if (!(e instanceof SysError)) throw e;
        throw new ImageError({ file, offset: 0 }, e.message);
      }
      this.#fds.set(file, fd);
    }
    return fd;
  }
}
