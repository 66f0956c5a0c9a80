/**
 * The paging policy: what to copy for a fault, what to push in the
 * background, and what each userfaultfd outcome means. The runtime
 * (`runtime.ts`) owns the sockets and the loop; this module owns the
 * decisions and the bookkeeping, and never blocks.
 *
 * @module
 */
import {
  E,
  errnoName,
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
import type { Chunk, PageSource } from "../source/mod.ts";
import type { Logger } from "./log.ts";
import { type InFlight, LazyProcess } from "./process.ts";

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
  backgroundChunk: 512 * PAGE,
};

/**
 * What happened to a request:
 * - "done": delivered (or nothing was left to deliver);
 * - "retry": the kernel is delivering a fork/remap/remove/unmap event to the
 *   daemon (EAGAIN with nothing copied); read the uffd, then try again
 *   (a fault: handle it again; a completion: call `complete` again);
 * - "exited": the process is gone;
 * - "failed": the pages cannot be delivered; `process.reason` says why and
 *   the runtime must stop the process before it runs on missing memory.
 */
export type Outcome = "done" | "retry" | "exited" | "failed";

/** A request in flight and the process it is for: the tag given to sources. */
export interface Pending {
  p: LazyProcess;
  req: InFlight;
}

/** The paging policy over one page source. */
export class Pager {
  readonly options: PagerOptions;
  readonly #source: PageSource<Pending>;
  readonly #log: Logger;

  constructor(
    source: PageSource<Pending>,
    log: Logger,
    options: PagerOptions,
  ) {
    this.#source = source;
    this.#log = log;
    this.options = options;
  }

  /**
   * Serves a page fault at `addr`: the window of lazy pages from the
   * faulting page on, or a zero page when nothing lazy is there (never
   * dumped, already delivered, or dropped). Nothing is done for a page
   * already on its way: its copy wakes every thread waiting for it. The
   * write/read flag does not matter: missing-mode faults want the page
   * either way.
   */
  fault(p: LazyProcess, addr: number): Outcome {
    p.counters.faults++;
    const page = addr - addr % PAGE;
    if (this.#log.debugOn) {
      this.#log.debug(`${p.label}: #PF at 0x${addr.toString(16)}`);
    }
    const waiting = inFlight(p, page);
    if (waiting) {
      waiting.waiters.push(page);
      return "done";
    }
    const win = faultWindow(p.lazy, page, {
      before: 0,
      after: this.options.faultWindow,
    });
    if (win === undefined) return this.#zero(p, page);
    // A process reading sequentially is best served by the background
    // pass going on right after its window; for scattered faults jumping
    // there would only break the pass's long copies into fragments.
    const span = 4 * this.options.faultWindow;
    const near = page >= p.lastFault && page - p.lastFault <= span;
    if (p.lastFault < 0 || near) p.cursor = win.end;
    p.lastFault = win.end;
    return this.#request(p, carve(p.lazy, win), false);
  }

  /**
   * Starts one background chunk of `p`, continuing after its last fault
   * window or chunk, so that a process reading sequentially finds its next
   * pages already there. Returns "done" with nothing sent when `p` has no
   * lazy pages left.
   */
  background(p: LazyProcess): Outcome {
    const chunk = nextChunk(p.lazy, {
      maxBytes: this.options.backgroundChunk,
      after: p.cursor,
    });
    if (chunk === undefined) return "done";
    p.cursor = chunk.end;
    return this.#request(p, carve(p.lazy, chunk), true);
  }

  /**
   * Copies the data of a request that arrived (or arrived earlier and got
   * "retry") into the process, wherever its pieces are now. Pages beyond a
   * short reply go back to the lazy ranges. The chunk is released unless
   * the outcome is "retry" (call again after draining the uffd).
   */
  complete(pending: Pending, chunk: Chunk): Outcome {
    const { p, req } = pending;
    if (!p.active) {
      chunk.release();
      return "done";
    }
    const have = chunk.bytes.byteLength;
    while (req.pieces.length > 0) {
      const piece = req.pieces[0];
      const off = piece.image - req.image;
      if (off >= have) {
        // A short reply: the page server's run ended. The rest goes back
        // to the lazy ranges, and faults waiting for it are asked again.
        for (const w of req.waiters) {
          if (req.pieces.some((x) => w >= x.start && w < x.end)) {
            p.refaults.push(w);
          }
        }
        p.lazy = mergeLists(p.lazy, req.pieces);
        req.pieces = [];
        break;
      }
      const len = Math.min(piece.end - piece.start, have - off);
      const r = this.#copy(p, {
        piece,
        len,
        src: chunk.address + off,
        background: req.background,
      });
      if (r.outcome === "retry") {
        req.pieces[0] = {
          start: piece.start + r.done,
          end: piece.end,
          image: piece.image + r.done,
        };
        return "retry";
      }
      if (r.outcome !== "done") {
        chunk.release();
        return r.outcome;
      }
      if (len < piece.end - piece.start) {
        req.pieces[0] = {
          start: piece.start + len,
          end: piece.end,
          image: piece.image + len,
        };
      } else req.pieces.shift();
    }
    dropRequest(p, req);
    chunk.release();
    return "done";
  }

  /**
   * UFFD_EVENT_FORK: a child with its own uffd. It needs what the parent
   * still needs, including what is on its way to the parent: those pages
   * were not there when the kernel copied the parent's page tables.
   */
  fork(parent: LazyProcess, ufd: number): LazyProcess {
    let lazy = copyRanges(parent.lazy);
    for (const r of parent.inflight) lazy = mergeLists(lazy, r.pieces);
    const child = new LazyProcess({
      imagePid: parent.imagePid,
      uffd: ufd,
      lazy,
      totalPages: countPages(lazy),
      label: `${parent.imagePid}-${ufd}`,
    });
    child.cursor = parent.cursor;
    // Pages the parent had at the fork are the child's too.
    child.probeAddr = parent.probeAddr;
    child.parentHostPid = parent.hostPid;
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
    for (const r of p.inflight) r.pieces = moveInterval(r.pieces, move);
    const a = p.probeAddr;
    if (a !== undefined && a >= move.from && a < move.from + move.len) {
      p.probeAddr = a + (move.to - move.from);
    }
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

  #drop(p: LazyProcess, range: { start: number; end: number }, what: string) {
    const a = p.probeAddr;
    if (a !== undefined && a >= range.start && a < range.end) {
      p.probeAddr = undefined;
    }
    const before = countPages(p.lazy);
    p.lazy = dropInterval(p.lazy, range);
    let dropped = before - countPages(p.lazy);
    for (const r of p.inflight) {
      const was = countPages(r.pieces);
      r.pieces = dropInterval(r.pieces, range);
      dropped += was - countPages(r.pieces);
    }
    p.counters.droppedPages += dropped;
    this.#log.debug(
      `${p.label}: ${what}: 0x${range.start.toString(16)}(${
        range.end - range.start
      })`,
    );
  }

  /**
   * Sends (or, for local images, reads and copies at once) the pieces
   * just carved out of `p.lazy`: contiguous, one lazy range. A synchronous
   * "retry" puts them back, so the caller simply handles the fault again.
   */
  #request(p: LazyProcess, pieces: LazyRange[], background: boolean): Outcome {
    let len = 0;
    for (const x of pieces) len += x.end - x.start;
    const req: InFlight = {
      image: pieces[0].image,
      len,
      pieces,
      background,
      waiters: [],
    };
    p.inflight.push(req);
    const pending = { p, req };
    let chunk: Chunk | undefined;
    try {
      chunk = this.#source.fetch({
        pid: p.imagePid,
        image: req.image,
        len,
        urgent: !background,
      }, pending);
    } catch (e) {
      return this.#fail(
        p,
        `cannot read ${len / PAGE} pages at image address 0x${
          req.image.toString(16)
        }: ${(e as Error).message}`,
      );
    }
    if (chunk === undefined) return "done"; // on its way
    const outcome = this.complete(pending, chunk);
    if (outcome === "retry") {
      p.lazy = mergeLists(p.lazy, req.pieces);
      dropRequest(p, req);
      chunk.release();
    }
    return outcome;
  }

  /**
   * UFFDIO_COPY of `len` bytes of one piece. Pages already copied stay
   * copied; `done` says how far it got. The copy size drops to one page
   * once a multi-page copy hits ENOENT, which happens when the range now
   * spans two VMAs (an mprotect split produces no event): single pages find
   * the seam.
   */
  #copy(
    p: LazyProcess,
    c: { piece: LazyRange; len: number; src: number; background: boolean },
  ): { outcome: Outcome; done: number } {
    const { piece, len, src } = c;
    let off = 0;
    let step = len;
    while (off < len) {
      const n = Math.min(step, len - off);
      const r = uffdCopy(p.uffd, {
        dst: piece.start + off,
        src: src + off,
        len: n,
      });
      if (r.copied > 0) {
        p.probeAddr = piece.start + off;
        off += r.copied;
        p.counters.copiedPages += r.copied / PAGE;
        if (c.background) p.counters.backgroundPages += r.copied / PAGE;
      }
      if (r.error === 0) continue;
      switch (r.error) {
        case E.EAGAIN:
          // With progress: the copy stopped at a page it could not fill,
          // and the next call reports that page's own error. Without: a
          // non-cooperative event is waiting to be read.
          if (r.copied > 0) continue;
          return { outcome: "retry", done: off };
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
          return {
            outcome: this.#fail(
              p,
              `0x${(piece.start + off).toString(16)} is lazy but not ` +
                "registered with its userfaultfd (ENOENT): the process would read zeros there",
            ),
            done: off,
          };
        case E.ESRCH:
        case E.ENOSPC:
          return { outcome: "exited", done: off };
        default:
          return {
            outcome: this.#fail(
              p,
              `UFFDIO_COPY of ${n} bytes at 0x${
                (piece.start + off).toString(16)
              }: ${errnoName(r.error)}`,
            ),
            done: off,
          };
      }
    }
    if (this.#log.debugOn) {
      this.#log.debug(
        `${p.label}: uffd_copy: 0x${piece.start.toString(16)}/${len}`,
      );
    }
    return { outcome: "done", done: off };
  }

  #zero(p: LazyProcess, page: number): Outcome {
    const r = uffdZeropage(p.uffd, { start: page, len: PAGE });
    switch (r.error) {
      case 0:
        p.counters.zeroPages++;
        p.probeAddr = page;
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
   * Whether the process still lives, asked of its uffd: UFFDIO_ZEROPAGE
   * on a page it certainly has answers EEXIST while it lives and ESRCH once
   * its memory is gone, and changes nothing either way. Undefined when
   * there is no such page to ask about.
   */
  alive(p: LazyProcess): boolean | undefined {
    if (p.probeAddr === undefined) return undefined;
    const r = uffdZeropage(p.uffd, { start: p.probeAddr, len: PAGE });
    if (r.error === E.ESRCH || r.error === E.ENOSPC) return false;
    if (r.error === E.EEXIST) return true;
    // Mapped a zero page: it was not there after all (it cannot have been
    // lazy: probeAddr leaves the lazy ranges); or ENOENT/EAGAIN: unknown.
    if (r.error === 0) return true;
    return undefined;
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

/** Forgets a request of `p` (indexOf -1 must not make splice drop another). */
function dropRequest(p: LazyProcess, req: InFlight): void {
  const i = p.inflight.indexOf(req);
  if (i >= 0) p.inflight.splice(i, 1);
}

/** The request on its way that holds `page` of `p`, if any. */
function inFlight(p: LazyProcess, page: number): InFlight | undefined {
  for (const r of p.inflight) {
    for (const x of r.pieces) {
      if (page >= x.start && page < x.end) return r;
    }
  }
  return undefined;
}
