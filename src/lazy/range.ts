/**
 * Queries and whole-list operations on range lists.
 *
 * A range list is a `LazyRange[]` sorted by `start` whose ranges are
 * non-empty, page aligned and do not overlap. Adjacent ranges are never
 * joined by this layer, even when their image addresses are contiguous: a
 * range therefore never spans two pagemap entries or two VMAs (as known when
 * the ranges were collected), which is what keeps a chunk readable from one
 * pagemap entry and copyable with one `UFFDIO_COPY`.
 *
 * @module
 */
import { type LazyRange, PAGE_SIZE } from "./types.ts";
import { checkAligned, hex } from "./_util.ts";

/**
 * Finds the range containing `addr` (any byte address, not necessarily page
 * aligned) by binary search.
 *
 * @returns the index of that range in `list`, or -1 if no range contains it.
 */
export function findRange(list: readonly LazyRange[], addr: number): number {
  // Last range starting at or below addr; only it can contain addr.
  let lo = 0;
  let hi = list.length;
  while (lo < hi) {
    const mid = Math.floor((lo + hi) / 2);
    if (list[mid].start <= addr) lo = mid + 1;
    else hi = mid;
  }
  return lo > 0 && addr < list[lo - 1].end ? lo - 1 : -1;
}

/** Number of pages covered by `list`. */
export function countPages(list: readonly LazyRange[]): number {
  let bytes = 0;
  for (const r of list) bytes += r.end - r.start;
  return bytes / PAGE_SIZE;
}

/**
 * A deep copy of `list`, e.g. for a forked child, whose lists must not be
 * affected by later changes to the parent's.
 */
export function copyRanges(list: readonly LazyRange[]): LazyRange[] {
  return list.map((r) => ({ start: r.start, end: r.end, image: r.image }));
}

/**
 * The union of two disjoint range lists as one new sorted list (on fork the
 * child gets the parent's remaining ranges plus its in-flight ones). Ranges
 * are not joined.
 *
 * @throws {RangeError} if a range of `a` overlaps one of `b`, or an input is
 * not sorted.
 */
export function mergeLists(
  a: readonly LazyRange[],
  b: readonly LazyRange[],
): LazyRange[] {
  const out: LazyRange[] = [];
  let i = 0;
  let j = 0;
  let prevEnd = -1;
  while (i < a.length || j < b.length) {
    const r = j >= b.length || (i < a.length && a[i].start <= b[j].start)
      ? a[i++]
      : b[j++];
    if (r.start < prevEnd) {
      throw new RangeError(
        `mergeLists: range at ${hex(r.start)} overlaps a range ending at ${
          hex(prevEnd)
        }`,
      );
    }
    out.push(r);
    prevEnd = r.end;
  }
  return out;
}

/**
 * Checks that `list` is a valid range list: every range non-empty, page
 * aligned, with safe-integer addresses, sorted by start and non-overlapping.
 * O(n); meant for tests and debug checks, not for the fault path.
 *
 * @throws {RangeError} describing the first violation.
 */
export function assertRangeList(list: readonly LazyRange[]): void {
  let prevEnd = 0;
  for (let i = 0; i < list.length; i++) {
    const r = list[i];
    try {
      checkAligned("start", r.start);
      checkAligned("end", r.end);
      checkAligned("image", r.image);
      checkAligned("image end", r.image + (r.end - r.start));
    } catch (e) {
      throw new RangeError(`range ${i}: ${(e as Error).message}`);
    }
    if (r.end <= r.start) {
      throw new RangeError(
        `range ${i} [${hex(r.start)}, ${hex(r.end)}) is empty or reversed`,
      );
    }
    if (r.start < prevEnd) {
      throw new RangeError(
        `range ${i} at ${
          hex(r.start)
        } overlaps or precedes the range ending at ${hex(prevEnd)}`,
      );
    }
    prevEnd = r.end;
  }
}
