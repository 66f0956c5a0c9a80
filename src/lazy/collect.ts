/**
 * Building a process's lazy ranges from its pagemap entries and VMAs
 * (`images.md` §8.4, §9).
 *
 * @module
 */
import type { Interval, LazyRange } from "./types.ts";
import { PAGE_SIZE } from "./types.ts";
import { checkAligned, hex } from "./_util.ts";

/** `PagemapEntry.flags` bit: the restorer skips the pages, the daemon serves them. */
const PE_LAZY = 2;

/** The fields of a pagemap entry that decide lazy ranges. */
export interface PagemapEntryLike {
  /** Dump-time address of the first page (page aligned). */
  readonly vaddr: number;
  /** Number of pages. */
  readonly nrPages: number;
  /** Effective `PE_*` flags (after the old-image compatibility rules). */
  readonly flags: number;
}

/** The fields of a VMA that decide lazy ranges. */
export interface VmaLike {
  /** First byte (page aligned). */
  readonly start: number;
  /** One past the last byte (page aligned). */
  readonly end: number;
}

/** Result of {@linkcode collectLazyRanges}. */
export interface CollectedRanges {
  /** The daemon's pages as a range list, each range inside one entry and one VMA. */
  ranges: LazyRange[];
  /**
   * Lazy pages in the images: the sum of `nrPages` of all `PE_LAZY` entries,
   * including pages listed in `outside` (CRIU's "total" statistic).
   */
  pages: number;
  /** Lazy pieces that no VMA covers: an image problem for the caller to report. */
  outside: Interval[];
}

/**
 * Turns one process's pagemap entries and VMAs into its lazy range list.
 *
 * An entry is the daemon's exactly when it has `PE_LAZY` (2), with or
 * without `PE_PARENT` (1): those are the pages the restorer skips. Every
 * other entry (`PE_PARENT` alone, `PE_PRESENT` alone) is restored eagerly
 * and ignored here. Each lazy entry yields one range per VMA it overlaps,
 * split at VMA boundaries because one `UFFDIO_COPY` may not cross a VMA; its
 * image address is its start. Pieces are never joined, not even contiguous
 * ones of adjacent entries, so every range (and every chunk taken from it)
 * lies in one pagemap entry, as the local page reader needs.
 *
 * @throws {RangeError} if entries or VMAs are not page aligned, not sorted,
 * overlap, are empty VMAs, or reach beyond safe integers.
 */
export function collectLazyRanges(
  entries: readonly PagemapEntryLike[],
  vmas: readonly VmaLike[],
): CollectedRanges {
  checkVmas(vmas);
  const ranges: LazyRange[] = [];
  const outside: Interval[] = [];
  let pages = 0;
  let prevEnd = 0;
  let v = 0; // VMA cursor, shared by all entries since both lists are sorted.
  for (let i = 0; i < entries.length; i++) {
    const { vaddr, nrPages, flags } = entries[i];
    const what = `pagemap entry ${i} (vaddr ${hex(vaddr)})`;
    checkEntryField(what, "vaddr", vaddr);
    if (!Number.isSafeInteger(nrPages) || nrPages < 0) {
      throw new RangeError(`${what}: bad nr_pages ${nrPages}`);
    }
    if (!Number.isInteger(flags) || flags < 0 || flags > 0xffffffff) {
      throw new RangeError(`${what}: bad flags ${flags}`);
    }
    const end = vaddr + nrPages * PAGE_SIZE;
    checkEntryField(what, "end", end);
    if (vaddr < prevEnd) {
      throw new RangeError(
        `${what} overlaps or precedes the previous entry ending at ${
          hex(prevEnd)
        }; pagemap entries must be sorted and disjoint`,
      );
    }
    prevEnd = end;
    // flags was checked to be a uint32, so the bitwise test is exact.
    if ((flags & PE_LAZY) === 0 || nrPages === 0) continue;

    pages += nrPages;
    let cur = vaddr;
    while (v < vmas.length && vmas[v].end <= cur) v++;
    while (cur < end) {
      if (v >= vmas.length || vmas[v].start >= end) {
        outside.push({ start: cur, end });
        break;
      }
      const vma = vmas[v];
      if (vma.start > cur) {
        outside.push({ start: cur, end: vma.start });
        cur = vma.start;
      }
      const pieceEnd = Math.min(end, vma.end);
      ranges.push({ start: cur, end: pieceEnd, image: cur });
      cur = pieceEnd;
      if (vma.end <= cur) v++;
    }
  }
  return { ranges, pages, outside };
}

function checkEntryField(what: string, name: string, value: number): void {
  try {
    checkAligned(name, value);
  } catch (e) {
    throw new RangeError(`${what}: ${(e as Error).message}`);
  }
}

function checkVmas(vmas: readonly VmaLike[]): void {
  let prevEnd = 0;
  for (let i = 0; i < vmas.length; i++) {
    const { start, end } = vmas[i];
    const what = `VMA ${i} [${hex(start)}, ${hex(end)})`;
    checkEntryField(what, "start", start);
    checkEntryField(what, "end", end);
    if (end <= start) throw new RangeError(`${what} is empty or reversed`);
    if (start < prevEnd) {
      throw new RangeError(
        `${what} overlaps or precedes the previous VMA ending at ${
          hex(prevEnd)
        }; VMAs must be sorted and disjoint`,
      );
    }
    prevEnd = end;
  }
}
