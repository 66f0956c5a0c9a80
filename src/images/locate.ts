/**
 * Where the contents of a dumped page range are, across the parent chain
 * (images.md §8.4, §8.5).
 *
 * @module
 */
import { PAGE_SIZE, PE_LAZY, PE_PARENT, PE_PRESENT } from "./constants.ts";
import { ImageError } from "./errors.ts";
import type { ImageDir } from "./image_dir.ts";
import {
  entryIndexAt,
  type Pagemap,
  type PagemapEntryInfo,
} from "./pagemap.ts";
import { hex } from "./_util.ts";

/** Pages whose contents are in a `pages-<n>.img` file. */
export interface DataSegment {
  /** Discriminant: this segment has data. */
  zero: false;
  /** The directory of the pages file (the opened one or a parent). */
  dir: ImageDir;
  /** Path of the `pages-<n>.img` file. */
  file: string;
  /** Byte offset of the first page in {@linkcode DataSegment.file}. */
  offset: number;
  /** Number of pages. */
  pages: number;
  /** Dump-time address of the first page. */
  addr: number;
}

/** Pages no entry in the chain covers: never touched before the dump, so zero. */
export interface ZeroSegment {
  /** Discriminant: the pages read as zeros. */
  zero: true;
  /** Number of pages. */
  pages: number;
  /** Dump-time address of the first page. */
  addr: number;
}

/** A piece of the answer of {@linkcode locatePages}. */
export type PageSegment = DataSegment | ZeroSegment;

/** The pages to look up. */
export interface PageRequest {
  /** Image pid of the process. */
  pid: number;
  /** Dump-time address of the first page (page aligned). */
  addr: number;
  /** Number of pages, at least 1. */
  pages: number;
}

/**
 * Finds the contents of `pages` pages from `addr` of process `pid`: a list
 * of segments covering exactly that range, in address order. Entries with
 * `PE_PARENT` are looked up in the parent chain (recursively; a parent's
 * entries may be shorter, so a run can split); `PE_PRESENT` data is at the
 * entry's offset in its directory's pages file; addresses no entry covers
 * are zero segments. Contiguous pieces of one file are joined.
 *
 * An entry that is lazy but has neither data nor a parent (a
 * `--lazy-pages` dump, whose data stays on the source) and data beyond the
 * end of its pages file are ImageErrors. Pagemaps and sizes are cached by
 * the ImageDir, and each level costs one binary search, so this is cheap
 * enough for every fault.
 *
 * @throws {RangeError} for a request that is not page aligned or not safe.
 */
export function locatePages(
  dir: ImageDir,
  request: PageRequest,
): PageSegment[] {
  const { addr, pages } = request;
  const end = addr + pages * PAGE_SIZE;
  if (
    !Number.isSafeInteger(addr) || addr < 0 || addr % PAGE_SIZE !== 0 ||
    !Number.isSafeInteger(pages) || pages < 1 || !Number.isSafeInteger(end)
  ) {
    throw new RangeError(`bad page request: ${pages} pages at ${addr}`);
  }
  const out: PageSegment[] = [];
  walk(dir, { pid: request.pid, start: addr, end, out });
  return out;
}

interface Walk {
  pid: number;
  start: number;
  end: number;
  out: PageSegment[];
}

function walk(dir: ImageDir, w: Walk): void {
  const pm = dir.pagemap(w.pid);
  let cursor = w.start;
  for (let i = entryIndexAt(pm.entries, cursor); cursor < w.end; i++) {
    const e = pm.entries[i] as PagemapEntryInfo | undefined;
    const next = e === undefined ? w.end : Math.min(e.vaddr, w.end);
    if (cursor < next) {
      push(w.out, {
        zero: true,
        addr: cursor,
        pages: (next - cursor) / PAGE_SIZE,
      });
      cursor = next;
    }
    if (e === undefined || cursor === w.end) break;
    const stop = Math.min(w.end, e.vaddr + e.nrPages * PAGE_SIZE);
    // CRIU's order: a parent hole is read from the parent whatever else is
    // set, so PE_LAZY|PE_PARENT is delivered from the parent chain.
    if (e.flags & PE_PARENT) {
      walk(parentFor(dir, { pm, e, pid: w.pid }), {
        ...w,
        start: cursor,
        end: stop,
      });
    } else if (e.flags & PE_PRESENT) {
      push(w.out, dataSegment(dir, { pm, e, start: cursor, end: stop }));
    } else {
      throw new ImageError(
        { file: pm.file, offset: e.recordOffset },
        e.flags & PE_LAZY
          ? "lazy pages without data: dump was made with --lazy-pages; " +
            `use --page-server (entry at ${hex(e.vaddr)})`
          : `entry at ${hex(e.vaddr)} has no data (flags ${hex(e.flags)})`,
      );
    }
    cursor = stop;
  }
}

function parentFor(
  dir: ImageDir,
  at: { pm: Pagemap; e: PagemapEntryInfo; pid: number },
): ImageDir {
  const parent = dir.parent();
  if (parent === undefined || !parent.hasPagemap(at.pid)) {
    throw new ImageError(
      { file: at.pm.file, offset: at.e.recordOffset },
      `pages at ${hex(at.e.vaddr)} are in the parent image, but there is no ` +
        `${
          parent === undefined
            ? "parent directory"
            : parent.file(`pagemap-${at.pid}.img`)
        }`,
    );
  }
  return parent;
}

function dataSegment(
  dir: ImageDir,
  at: { pm: Pagemap; e: PagemapEntryInfo; start: number; end: number },
): DataSegment {
  const pf = dir.pagesFile(at.pm.pagesId);
  const offset = at.e.dataOffset + (at.start - at.e.vaddr);
  const bytes = at.end - at.start;
  if (offset + bytes > pf.size) {
    throw new ImageError(
      { file: pf.path, offset },
      `pages file too short: ${pf.size} bytes, but ${hex(at.start)} of ` +
        `${at.pm.file} (record at byte ${at.e.recordOffset}) needs bytes up to ${
          offset + bytes
        }`,
    );
  }
  return {
    zero: false,
    dir,
    file: pf.path,
    offset,
    pages: bytes / PAGE_SIZE,
    addr: at.start,
  };
}

/** Appends a segment, joining it to the previous one when they are contiguous. */
function push(out: PageSegment[], seg: PageSegment): void {
  const last = out.at(-1);
  if (
    last && last.addr + last.pages * PAGE_SIZE === seg.addr &&
    contiguous(last, seg)
  ) {
    last.pages += seg.pages;
  } else {
    out.push(seg);
  }
}

function contiguous(a: PageSegment, b: PageSegment): boolean {
  if (a.zero || b.zero) return a.zero && b.zero;
  return a.file === b.file && a.offset + a.pages * PAGE_SIZE === b.offset;
}
