// Internal helpers: argument checks, binary searches, piece slicing.
// Everything is plain number arithmetic: addresses reach 2^57, so any
// bitwise operator (which truncates to 32 bits) would corrupt them.
import { type LazyRange, PAGE_SIZE } from "./types.ts";

/** Formats an address for error messages. */
export function hex(n: number): string {
  return Number.isSafeInteger(n) && n >= 0 ? "0x" + n.toString(16) : String(n);
}

/** Throws unless `value` is a non-negative, page-aligned safe integer. */
export function checkAligned(name: string, value: number): void {
  if (!Number.isSafeInteger(value) || value < 0 || value % PAGE_SIZE !== 0) {
    throw new RangeError(
      `${name} must be a non-negative page-aligned safe integer, got ${
        hex(value)
      }`,
    );
  }
}

/** Throws unless `[start, end)` is a page-aligned interval with safe ends. */
export function checkInterval(start: number, end: number): void {
  checkAligned("start", start);
  checkAligned("end", end);
  if (end < start) {
    throw new RangeError(
      `interval end ${hex(end)} is below start ${hex(start)}`,
    );
  }
}

/** Index of the first range whose end is above `addr` (list.length if none). */
export function firstEndAbove(
  list: readonly LazyRange[],
  addr: number,
): number {
  let lo = 0;
  let hi = list.length;
  while (lo < hi) {
    const mid = Math.floor((lo + hi) / 2);
    if (list[mid].end <= addr) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/**
 * Index of the first range at or after `from` whose start is at or above
 * `addr` (list.length if none).
 */
export function firstStartAtOrAbove(
  list: readonly LazyRange[],
  addr: number,
  from = 0,
): number {
  let lo = from;
  let hi = list.length;
  while (lo < hi) {
    const mid = Math.floor((lo + hi) / 2);
    if (list[mid].start < addr) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** The part `[start, end)` of `r`, with its image address kept in step. */
export function slice(r: LazyRange, start: number, end: number): LazyRange {
  if (start === r.start && end === r.end) return r;
  return { start, end, image: r.image + (start - r.start) };
}
