/**
 * The paging policy: what to copy for a fault, what to push in the
 * background, and what each userfaultfd outcome means. The runtime
 * (`runtime.ts`) owns the sockets and the loop; this module owns the
 * decisions and the bookkeeping, and never blocks.
 *
 * @module
 */
import {
  allocPages,
  E,
  errnoName,
  type PageBuffer,
  uffdCopy,
  uffdUnregister,
  uffdWake,
  uffdZeropage,
} from "../../ffi/mod.ts";
import {
  carve,
  copyRanges,
  countPages,
  dropInterval,
  faultWindow,
  type LazyRange,
  mergeLists,
  moveInterval,
  nextChunk,
} from "../lazy/mod.ts";
import type { PageSource } from "../source/mod.ts";
import type { Logger } from "./log.ts";
import { LazyProcess } from "./process.ts";

const PAGE = 4096;

/** Tunables of the policy. */
export interface PagerOptions {
  /**
   * Bytes fetched from the faulting page onwards, within its lazy range.
   * A few pages of read-ahead turn a sequential first touch into a fraction
   * of the faults, at the price of a slightly longer copy per fault.
   */
  faultWindow: number;
  /** Bytes per background copy; bounds how long a fault can wait behind one. */
  backgroundChunk: number;
}

/** Defaults, tuned with `deno task bench` on the local-images path. */
export const DEFAULT_PAGER_OPTIONS: PagerOptions = {
  faultWindow: 16 * PAGE,
  backgroundChunk: 256 * PAGE,
};

/**
 * What happened to a request:
 * - "done": delivered (or nothing was left to deliver);
 * - "retry": the kernel is delivering a fork/remap/remove/unmap event to the
 *   daemon (EAGAIN with nothing copied); read the uffd, then try again;
 * - "exited": the process is gone;
 * - "failed": the pages cannot be delivered; `process.reason` says why and
 *   the runtime must stop the process before it runs on missing memory.
 */
export type Outcome = "done" | "retry" | "exited" | "failed";

/** The paging policy over one page source. */
export class Pager {
  readonly options: PagerOptions;
  readonly #source: PageSource;
  readonly #log: Logger;
  readonly #buf: PageBuffer;

  constructor(source: PageSource, log: Logger, options: PagerOptions) {
    this.#source = source;
    this.#log = log;
    this.options = options;
    // One buffer serves every copy: requests are handled one at a time, and
    // the kernel copies out of it during the ioctl. It lives as long as the
    // pager so V8 never frees memory whose address the kernel holds.
    this.#buf = allocPages(
      Math.max(options.faultWindow, options.backgroundChunk),
    );
  }

  /**
   * Serves a page fault at `addr`: the window of lazy pages from the
   * faulting page on, or a zero page when nothing lazy is there (never
   * dumped, already delivered, or dropped). The write/read flag does not
   * matter: missing-mode faults want the page either way.
   */
  fault(p: LazyProcess, addr: number): Outcome {
    p.counters.faults++;
    const page = addr - addr % PAGE;
    const win = faultWindow(p.lazy, page, {
      before: 0,
      after: this.options.faultWindow,
    });
    if (this.#log.debugOn) {
      this.#log.debug(`${p.label}: #PF at 0x${addr.toString(16)}`);
    }
    if (win === undefined) return this.#zero(p, page);
    // The background pass continues right after the window: what a
    // process touched last is the best guess of what it touches next.
    p.cursor = win.end;
    return this.#deliver(
      p,
      carve(p.lazy, win),
      false,
    );
  }

  /**
   * Pushes one background chunk of `p`, continuing after its last fault
   * window or chunk, so that a process reading sequentially finds its next
   * pages already there. Returns "done" with nothing sent when `p` has no lazy
   * pages left.
   */
  background(p: LazyProcess): Outcome {
    const chunk = nextChunk(p.lazy, {
      maxBytes: this.options.backgroundChunk,
      after: p.cursor,
    });
    if (chunk === undefined) return "done";
    p.cursor = chunk.end;
    return this.#deliver(
      p,
      carve(p.lazy, chunk),
      true,
    );
  }

  /** UFFD_EVENT_FORK: a child with its own uffd and a copy of what is left. */
  fork(parent: LazyProcess, ufd: number): LazyProcess {
    const lazy = copyRanges(parent.lazy);
    const child = new LazyProcess({
      imagePid: parent.imagePid,
      uffd: ufd,
      lazy,
      totalPages: countPages(lazy),
      label: `${parent.imagePid}-${ufd}`,
    });
    child.cursor = parent.cursor;
    this.#log.debug(`${parent.label}: FORK: child with ufd=${ufd}`);
    return child;
  }

  /** UFFD_EVENT_REMAP: ranges move, their image addresses stay. */
  remap(p: LazyProcess, move: { from: number; to: number; len: number }): void {
    this.#log.debug(
      `${p.label}: REMAP: 0x${move.from.toString(16)} -> 0x${
        move.to.toString(16)
      } (${move.len})`,
    );
    p.lazy = moveInterval(p.lazy, move);
  }

  /**
   * UFFD_EVENT_REMOVE (MADV_DONTNEED/REMOVE): the pages are discarded and
   * must read as zeros. The range is unregistered so later touches are
   * ordinary zero-fill faults that never reach the daemon.
   */
  remove(p: LazyProcess, range: { start: number; end: number }): Outcome {
    this.#drop(p, range, "REMOVE");
    try {
      uffdUnregister(p.uffd, {
        start: range.start,
        len: range.end - range.start,
      });
    } catch (e) {
      // ENOMEM: the mm is gone. Anything else: the range already left the
      // uffd (e.g. unmapped meanwhile), which is what we wanted.
      if ((e as { errno?: number }).errno === E.ENOMEM) return "exited";
    }
    return "done";
  }

  /** UFFD_EVENT_UNMAP: the pages no longer exist. */
  unmap(p: LazyProcess, range: { start: number; end: number }): void {
    this.#drop(p, range, "UNMAP");
  }

  /** Releases the copy buffer. */
  close(): void {
    this.#buf.free();
  }

  #drop(p: LazyProcess, range: { start: number; end: number }, what: string) {
    const before = countPages(p.lazy);
    p.lazy = dropInterval(p.lazy, range);
    p.counters.droppedPages += before - countPages(p.lazy);
    this.#log.debug(
      `${p.label}: ${what}: 0x${range.start.toString(16)}(${
        range.end - range.start
      })`,
    );
  }

  #zero(p: LazyProcess, page: number): Outcome {
    const r = uffdZeropage(p.uffd, { start: page, len: PAGE });
    switch (r.error) {
      case 0:
        p.counters.zeroPages++;
        return "done";
      case E.EEXIST: // another thread's fault on this page was served first
        return "done";
      case E.EAGAIN:
        return "retry";
      case E.ENOENT:
        // The range left the uffd (unmapped or removed) after the fault was
        // queued. Wake the faulting thread so it retries against the
        // current mapping instead of sleeping for ever.
        this.#wake(p, page);
        return "done";
      case E.ESRCH:
      case E.ENOSPC:
        return "exited";
      default:
        return this.#fail(
          p,
          `UFFDIO_ZEROPAGE at 0x${page.toString(16)}: ${errnoName(r.error)}`,
        );
    }
  }

  /**
   * Reads `pieces` (carved out of `p.lazy`, contiguous, one lazy range)
   * and copies them in. Whatever cannot be copied yet goes back to
   * `p.lazy`, so no page is ever lost from the bookkeeping.
   */
  #deliver(p: LazyProcess, pieces: LazyRange[], background: boolean): Outcome {
    for (let i = 0; i < pieces.length; i++) {
      const outcome = this.#deliverOne(p, pieces[i], background);
      if (outcome !== "done") {
        if (outcome === "retry" && i + 1 < pieces.length) {
          p.lazy = mergeLists(p.lazy, pieces.slice(i + 1));
        }
        return outcome;
      }
    }
    return "done";
  }

  #deliverOne(p: LazyProcess, piece: LazyRange, background: boolean): Outcome {
    const len = piece.end - piece.start;
    const data = this.#buf.bytes.subarray(0, len);
    try {
      this.#source.read(p.imagePid, { image: piece.image, into: data });
    } catch (e) {
      return this.#fail(
        p,
        `cannot read ${len / PAGE} pages at image address 0x${
          piece.image.toString(16)
        }: ${(e as Error).message}`,
      );
    }
    // Pages already copied stay copied; on any early return the rest of
    // the piece is put back. `step` drops to one page once a multi-page
    // copy hits ENOENT, which happens when the range now spans two VMAs
    // (an mprotect split produces no event): single pages find the seam.
    let off = 0;
    let step = len;
    while (off < len) {
      const n = Math.min(step, len - off);
      const r = uffdCopy(p.uffd, {
        dst: piece.start + off,
        src: this.#buf.address + off,
        len: n,
      });
      if (r.copied > 0) {
        off += r.copied;
        p.counters.copiedPages += r.copied / PAGE;
        if (background) p.counters.backgroundPages += r.copied / PAGE;
      }
      if (r.error === 0) continue;
      switch (r.error) {
        case E.EAGAIN:
          // With progress: the copy stopped at a page it could not fill,
          // and the next call reports that page's own error. Without: a
          // non-cooperative event is waiting to be read.
          if (r.copied > 0) continue;
          this.#putBack(p, piece, off);
          return "retry";
        case E.EEXIST:
          // The page is already there (a racing fault, or written after a
          // REMOVE unregistered it); it is not ours to fill any more.
          off += PAGE;
          p.counters.presentPages++;
          continue;
        case E.ENOENT:
          if (n > PAGE) {
            step = PAGE;
            continue;
          }
          return this.#fail(
            p,
            `0x${(piece.start + off).toString(16)} is lazy but not ` +
              "registered with its userfaultfd (ENOENT): the process would read zeros there",
          );
        case E.ESRCH:
        case E.ENOSPC:
          return "exited";
        default:
          this.#putBack(p, piece, off);
          return this.#fail(
            p,
            `UFFDIO_COPY of ${n} bytes at 0x${
              (piece.start + off).toString(16)
            }: ${errnoName(r.error)}`,
          );
      }
    }
    if (this.#log.debugOn) {
      this.#log.debug(
        `${p.label}: uffd_copy: 0x${piece.start.toString(16)}/${len}`,
      );
    }
    return "done";
  }

  #putBack(p: LazyProcess, piece: LazyRange, off: number): void {
    if (off >= piece.end - piece.start) return;
    p.lazy = mergeLists(p.lazy, [{
      start: piece.start + off,
      end: piece.end,
      image: piece.image + off,
    }]);
  }

  #wake(p: LazyProcess, page: number): void {
    try {
      uffdWake(p.uffd, { start: page, len: PAGE });
    } catch {
      // Nothing is registered there any more, so nobody waits there.
    }
  }

  #fail(p: LazyProcess, reason: string): Outcome {
    p.reason = reason;
    return "failed";
  }
}
