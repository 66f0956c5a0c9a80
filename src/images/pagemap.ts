/**
 * `pagemap-<pid>.img`: which pages were dumped, with which flags, and where
 * their contents are (images.md §6.5, §8, §12).
 *
 * @module
 */
import { isFieldSet } from "@bufbuild/protobuf";
import {
  type PagemapEntry,
  PagemapEntrySchema,
  PagemapHeadSchema,
} from "../../proto/gen/pagemap_pb.ts";
import { PAGE_SIZE, PE_PARENT, PE_PRESENT } from "./constants.ts";
import { ImageError } from "./errors.ts";
import { decodeFraming, decodeRecord } from "./framing.ts";
import { hex, safeNumber } from "./_util.ts";

/** One pagemap entry: a run of pages with the same flags. */
export interface PagemapEntryInfo {
  /** Dump-time address of the first page (page aligned). */
  vaddr: number;
  /** Number of pages, at least 1. */
  nrPages: number;
  /** Effective `PE_*` flags, after the old-image compatibility rules (§8.2). */
  flags: number;
  /**
   * Byte offset of this entry's data in `pages-<pagesId>.img`, or -1 when
   * the entry has no `PE_PRESENT`.
   */
  dataOffset: number;
  /** Byte offset of the entry's record in the pagemap file, for messages. */
  recordOffset: number;
}

/** A parsed `pagemap-<pid>.img`. */
export interface Pagemap {
  /** Path of the image. */
  file: string;
  /** `<n>` of the companion `pages-<n>.img` in the same directory. */
  pagesId: number;
  /** Entries by ascending address, non-overlapping. */
  entries: PagemapEntryInfo[];
  /** Bytes of page data the entries expect in the pages file. */
  presentBytes: number;
}

/**
 * Parses `pagemap-<pid>.img`: a head record, then entries. Applies the
 * pre-flags compatibility rule (`in_parent` → `PE_PARENT`, no flags →
 * `PE_PRESENT`), prefers CRIU 4.2's 64-bit `nr_pages` (field 5) when it is
 * present, and checks that entries are page aligned, non-empty, sorted and
 * non-overlapping. Errors name the offending record's offset.
 */
export function parsePagemap(
  bytes: Uint8Array,
  options: { file: string; imgVersion: number },
): Pagemap {
  const { file } = options;
  const [head, ...rest] = decodeFraming(bytes, { ...options, kind: "pagemap" });
  if (!head) {
    throw new ImageError(
      { file, offset: bytes.length },
      "no pagemap head record",
    );
  }
  const { pagesId } = decodeRecord(PagemapHeadSchema, head, { file });
  const entries: PagemapEntryInfo[] = [];
  let dataEnd = 0;
  let prevEnd = 0;
  for (const record of rest) {
    const offset = record.offset;
    const fail = (reason: string): never => {
      throw new ImageError({ file, offset }, reason);
    };
    const e = decodeRecord(PagemapEntrySchema, record, { file });
    const vaddr = safeNumber(e.vaddr, { file, offset, what: "vaddr" });
    const nrPages = isFieldSet(e, PagemapEntrySchema.field.nrPages64)
      ? safeNumber(e.nrPages64, { file, offset, what: "nr_pages" })
      : e.nrPages;
    const size = nrPages * PAGE_SIZE;
    const end = vaddr + size;
    if (vaddr % PAGE_SIZE !== 0) {
      fail(`vaddr ${hex(vaddr)} is not page aligned`);
    }
    if (nrPages < 1) fail(`entry at ${hex(vaddr)} has no pages`);
    if (!Number.isSafeInteger(end)) {
      fail(`entry at ${hex(vaddr)} with ${nrPages} pages ends beyond 2^53`);
    }
    if (vaddr < prevEnd) {
      fail(
        `entry at ${
          hex(vaddr)
        } overlaps or precedes the previous one ending at ${hex(prevEnd)}`,
      );
    }
    const flags = compatFlags(e);
    let dataOffset = -1;
    if (flags & PE_PRESENT) {
      dataOffset = dataEnd;
      dataEnd += size;
      if (!Number.isSafeInteger(dataEnd)) {
        fail("page data would end beyond 2^53 bytes");
      }
    }
    entries.push({ vaddr, nrPages, flags, dataOffset, recordOffset: offset });
    prevEnd = end;
  }
  return { file, pagesId, entries, presentBytes: dataEnd };
}

/**
 * An entry's effective flags (§8.2), in CRIU's order: `in_parent` adds
 * `PE_PARENT`; otherwise a missing flags field means the image predates
 * flags and the pages are present.
 */
export function compatFlags(e: PagemapEntry): number {
  if (isFieldSet(e, PagemapEntrySchema.field.inParent) && e.inParent) {
    return e.flags | PE_PARENT;
  }
  if (!isFieldSet(e, PagemapEntrySchema.field.flags)) return PE_PRESENT;
  return e.flags;
}

/**
 * Index of the first entry that ends above `addr` (`entries.length` if
 * none): the entry containing `addr` if any, else the next one. Binary
 * search, for per-fault lookups.
 */
export function entryIndexAt(
  entries: readonly PagemapEntryInfo[],
  addr: number,
): number {
  let lo = 0;
  let hi = entries.length;
  while (lo < hi) {
    const mid = Math.floor((lo + hi) / 2);
    const e = entries[mid];
    if (e.vaddr + e.nrPages * PAGE_SIZE <= addr) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
