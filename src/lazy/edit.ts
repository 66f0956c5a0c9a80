/**
 * Removing and moving address intervals in range lists: the bookkeeping for
 * faults and requests (`carve`) and for the uffd UNMAP, REMOVE and REMAP
 * events (`dropInterval`, `moveInterval`).
 *
 * @module
 */
import type { Interval, LazyRange } from "./types.ts";
import {
  checkAligned,
  checkInterval,
  firstEndAbove,
  firstStartAtOrAbove,
  slice,
} from "./_util.ts";
import { mergeLists } from "./range.ts";

/**
 * Removes `[start, end)` from `list` **in place** and returns the removed
 * pieces, sorted, each with its image address adjusted to its new start.
 * Addresses in `[start, end)` that `list` does not cover are ignored.
 *
 * This is the fault path's operation: two binary searches, work in
 * proportion to the ranges it touches, and at most one `splice` (none when a
 * range is only trimmed), so it stays cheap on lists of tens of thousands of
 * ranges. Range objects are replaced, never
 * modified, so lists sharing them are not affected.
 *
 * @throws {RangeError} if `start` or `end` is not a page-aligned safe
 * integer, or `end < start`.
 */
export function carve(
  list: LazyRange[],
  interval: Interval,
): LazyRange[] {
  const { start, end } = interval;
  checkInterval(start, end);
  if (start === end) return [];
  const first = firstEndAbove(list, start);
  const last = firstStartAtOrAbove(list, end, first);
  if (first >= last) return [];

  const removed: LazyRange[] = [];
  for (let i = first; i < last; i++) {
    const r = list[i];
    removed.push(slice(r, Math.max(r.start, start), Math.min(r.end, end)));
  }
  const keep: LazyRange[] = [];
  const head = list[first];
  if (head.start < start) keep.push(slice(head, head.start, start));
  const tail = list[last - 1];
  if (tail.end > end) keep.push(slice(tail, end, tail.end));

  // Overwrite in place and splice only the difference in length: V8's
  // splice with replacement items is markedly slower on long arrays.
  const count = last - first;
  const common = Math.min(count, keep.length);
  for (let k = 0; k < common; k++) list[first + k] = keep[k];
  if (keep.length > count) list.splice(first + count, 0, keep[count]);
  else if (count > common) list.splice(first + common, count - common);
  return removed;
}

/**
 * A new list without `[start, end)`: for the uffd UNMAP and REMOVE events.
 * Lengths of 4 GiB and more are handled exactly (CRIU 4.1.1 truncated them to
 * 32 bits). `list` is not modified.
 *
 * @throws {RangeError} as {@linkcode carve}.
 */
export function dropInterval(
  list: readonly LazyRange[],
  interval: Interval,
): LazyRange[] {
  const { start, end } = interval;
  const out = list.slice();
  carve(out, { start: start, end: end });
  return out;
}

/** Options of {@linkcode moveInterval}: the uffd REMAP event's fields. */
export interface MoveOptions {
  /** Old start address of the moved area (page aligned). */
  from: number;
  /** New start address (page aligned). */
  to: number;
  /** Length of the moved area in bytes (page multiple, may be 0). */
  len: number;
}

/**
 * A new list in which everything inside `[from, from + len)` has moved to
 * `[to, to + len)`: for the uffd REMAP (mremap) event. Ranges crossing the
 * source boundaries are split there; moved pieces keep their image
 * addresses, so data is still found at its dump-time address.
 *
 * The kernel sends UNMAP for the destination before REMAP, so normally
 * nothing is there. If something is, it is stale: after mremap the whole
 * destination belongs to the moved mapping. Old ranges inside
 * `[to, to + len)` are therefore dropped and the moved pieces win. `list` is
 * not modified.
 *
 * @throws {RangeError} if an address or the length is not a page-aligned
 * safe integer, or `from + len` / `to + len` is not a safe integer.
 */
export function moveInterval(
  list: readonly LazyRange[],
  opts: MoveOptions,
): LazyRange[] {
  const { from, to, len } = opts;
  checkAligned("from", from);
  checkAligned("to", to);
  checkAligned("len", len);
  checkAligned("from + len", from + len);
  checkAligned("to + len", to + len);
  const rest = list.slice();
  if (len === 0 || from === to) return rest;
  const delta = to - from;
  const moved = carve(rest, { start: from, end: from + len }).map((r) => ({
    start: r.start + delta,
    end: r.end + delta,
    image: r.image,
  }));
  carve(rest, { start: to, end: to + len });
  return mergeLists(rest, moved);
}
