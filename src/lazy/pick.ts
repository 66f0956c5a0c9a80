/**
 * Choosing what to transfer next: the window around a fault and the next
 * background chunk. Both are pure; the caller carves what it requests.
 *
 * @module
 */
import { type LazyRange, PAGE_SIZE } from "./types.ts";
import { checkAligned, firstEndAbove, hex, slice } from "./_util.ts";
import { findRange } from "./range.ts";

/** Options of {@linkcode faultWindow}. */
export interface WindowOptions {
  /** Bytes to take before the faulting page (page multiple, may be 0). */
  before: number;
  /**
   * Bytes from the start of the faulting page on (page multiple, at least
   * one page): `4096` with `before: 0` is CRIU's one-page fault transfer.
   */
  after: number;
}

/**
 * What to transfer for a page fault at `addr` (any byte address): the part of
 * the range containing `addr`'s page that lies in
 * `[page - before, page + after)`. The window never leaves that range, so it
 * is one pagemap entry and one VMA. `list` is not modified.
 *
 * @returns the window with its image address, or `undefined` when `addr` is
 * not lazy (the caller answers with a zero page).
 * @throws {RangeError} if `addr` is not a non-negative safe integer,
 * `before`/`after` are not page multiples, or `after` is below one page.
 */
export function faultWindow(
  list: readonly LazyRange[],
  addr: number,
  opts: WindowOptions,
): LazyRange | undefined {
  if (!Number.isSafeInteger(addr) || addr < 0) {
    throw new RangeError(
      `fault address must be a non-negative safe integer, got ${hex(addr)}`,
    );
  }
  checkAligned("before", opts.before);
  checkAligned("after", opts.after);
  if (opts.after < PAGE_SIZE) {
    throw new RangeError("after must include the faulting page (>= 4096)");
  }
  const page = addr - addr % PAGE_SIZE;
  const i = findRange(list, page);
  if (i < 0) return undefined;
  const r = list[i];
  return slice(
    r,
    Math.max(r.start, page - opts.before),
    Math.min(r.end, page + opts.after),
  );
}

/** Options of {@linkcode nextChunk}. */
export interface ChunkOptions {
  /** Largest chunk to return, in bytes (page multiple, at least one page). */
  maxBytes: number;
  /**
   * Current address to continue from (page aligned, default 0). The chunk
   * starts at the first lazy byte at or above it, wrapping around to the
   * lowest range when nothing is left above it.
   */
  after?: number;
}

/**
 * The next background chunk: the first lazy piece at or above `after`
 * (wrapping around), at most `maxBytes` long and never crossing a range. With
 * `after` 0 this is CRIU's choice, the start of the lowest range. `list` is
 * not modified.
 *
 * @returns the chunk with its image address, or `undefined` if `list` is
 * empty.
 * @throws {RangeError} if `maxBytes` or `after` is not page aligned or
 * `maxBytes` is below one page.
 */
export function nextChunk(
  list: readonly LazyRange[],
  opts: ChunkOptions,
): LazyRange | undefined {
  const after = opts.after ?? 0;
  checkAligned("after", after);
  checkAligned("maxBytes", opts.maxBytes);
  if (opts.maxBytes < PAGE_SIZE) {
    throw new RangeError("maxBytes must be at least one page");
  }
  if (list.length === 0) return undefined;
  const i = firstEndAbove(list, after);
  const r = i < list.length ? list[i] : list[0];
  const start = i < list.length ? Math.max(r.start, after) : r.start;
  return slice(r, start, Math.min(r.end, start + opts.maxBytes));
}
