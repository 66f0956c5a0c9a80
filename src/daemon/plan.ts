/**
 * What the daemon will have to deliver, read from the images before
 * restore starts: the process list and each process's lazy ranges. Every
 * problem found here stops the daemon before it listens, so `criu restore`
 * fails cleanly instead of restoring processes that cannot be filled.
 *
 * @module
 */
import {
  type ImageDir,
  ImageError,
  locatePages,
  PE_LAZY,
  PE_PARENT,
  PE_PRESENT,
} from "../images/mod.ts";
import { collectLazyRanges, type LazyRange } from "../lazy/mod.ts";

/** One process's share of the work. */
export interface ProcessPlan {
  /** Image pid. */
  pid: number;
  /** Number of VMAs in `mm-<pid>.img`. */
  vmas: number;
  /** Lazy ranges, split at VMA boundaries. */
  ranges: LazyRange[];
  /** Lazy pages in the pagemap (CRIU's "total"). */
  lazyPages: number;
}

/** The images as the daemon needs them. */
export interface Plan {
  /** Pids of all pstree entries: restore sends one record for each. */
  pids: number[];
  /** Plans of the processes, by image pid (zombies have empty plans). */
  processes: Map<number, ProcessPlan>;
}

/** Options of {@linkcode makePlan}. */
export interface PlanOptions {
  /**
   * Pages come from these images (no page server): every lazy page must
   * have data here or in the parent chain, checked up front.
   */
  local: boolean;
}

function hex(n: number): string {
  return "0x" + n.toString(16);
}

/**
 * Reads inventory, pstree, and every process's mm and pagemap; collects the
 * lazy ranges. Throws ImageError for anything that would make a lazy
 * restore go wrong.
 */
export function makePlan(dir: ImageDir, options: PlanOptions): Plan {
  dir.inventory();
  const pstree = dir.pstree();
  const pids = pstree.map((e) => e.pid);
  const processes = new Map<number, ProcessPlan>();
  // pstree() already refused duplicate and zero pids.
  for (const pid of pids) {
    // Zombies have no mm or pagemap; restore tells us which pids they are,
    // so a missing pagemap is only an error once a live record names it.
    if (!dir.hasPagemap(pid)) continue;
    processes.set(pid, planProcess(dir, pid, options));
  }
  return { pids, processes };
}

function planProcess(
  dir: ImageDir,
  pid: number,
  options: PlanOptions,
): ProcessPlan {
  const { vmas } = dir.mm(pid);
  const pm = dir.pagemap(pid);
  const got = collectLazyRanges(pm.entries, vmas);
  if (got.outside.length > 0) {
    const o = got.outside[0];
    throw new ImageError(
      { file: pm.file, offset: 0 },
      `${got.outside.length} lazy piece(s) outside every VMA of mm-${pid}.img, ` +
        `first ${hex(o.start)}-${hex(o.end)}`,
    );
  }
  if (options.local) {
    for (const e of pm.entries) {
      if ((e.flags & PE_LAZY) === 0) continue;
      if ((e.flags & (PE_PRESENT | PE_PARENT)) === 0) {
        throw new ImageError(
          { file: pm.file, offset: e.recordOffset },
          `lazy entry ${hex(e.vaddr)} (${e.nrPages} pages) has no data in ` +
            "these images: they were dumped with --lazy-pages, so the pages " +
            "are on the source; run lazyd with --page-server",
        );
      }
      // Follows parents and checks every pages file is long enough.
      locatePages(dir, { pid, addr: e.vaddr, pages: e.nrPages });
    }
  }
  return {
    pid,
    vmas: vmas.length,
    ranges: got.ranges,
    lazyPages: got.pages,
  };
}
