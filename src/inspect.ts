/**
 * `lazyd inspect`: what a lazy restore of an images directory would
 * involve, per process, and every problem that would stop it.
 *
 * @module
 */
import {
  canBeLazy,
  ImageDir,
  ImageError,
  locatePages,
  PAGE_SIZE,
  PE_LAZY,
  PE_PARENT,
  PE_PRESENT,
} from "./images/mod.ts";
import { collectLazyRanges } from "./lazy/mod.ts";

/** One process of the report. */
export interface ProcessInfo {
  /** Image pid. */
  pid: number;
  /** False for pstree entries without memory images (zombies). */
  hasMemory: boolean;
  /** VMAs in mm-<pid>.img. */
  vmas: number;
  /** Pages flagged PE_LAZY: the daemon's to deliver. */
  lazyPages: number;
  /** Lazy pages whose data is in these images or their parents. */
  lazyLocalPages: number;
  /** Pages flagged PE_PARENT only: restore fills them from the parent chain. */
  parentPages: number;
  /** Pages whose data is in this directory's pages file. */
  presentPages: number;
  /** Pages of lazy-able VMAs that no entry covers: answered as zero pages. */
  zeroPages: number;
  /** Where PE_PARENT pages are: directory path → pages. */
  parentSources: Record<string, number>;
}

/** The whole report (also the `--json` output). */
export interface InspectReport {
  /** The directory, absolute. */
  dir: string;
  /** The parent chain, nearest first (absolute, resolved). */
  parents: string[];
  /** One entry per pstree entry. */
  processes: ProcessInfo[];
  /** Everything that would make a lazy restore fail or go wrong. */
  problems: string[];
  /** Whether lazyd can serve this directory from local images alone. */
  localOk: boolean;
  /** Whether a lazy restore can work at all (possibly with --page-server). */
  usable: boolean;
}

function describe(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** Inspects `path`. Never throws for bad images: they become problems. */
export function inspect(path: string): InspectReport {
  const report: InspectReport = {
    dir: path,
    parents: [],
    processes: [],
    problems: [],
    localOk: false,
    usable: false,
  };
  let dir: ImageDir;
  try {
    dir = ImageDir.open(path);
    report.dir = dir.path;
    report.parents = dir.chain().slice(1).map((d) => d.path);
    dir.inventory();
    for (const e of dir.pstree()) {
      report.processes.push(inspectProcess(dir, e.pid, report.problems));
    }
  } catch (e) {
    if (!(e instanceof ImageError)) throw e;
    report.problems.push(e.message);
    return report;
  }
  report.usable = report.problems.length === 0 &&
    report.processes.some((p) => p.hasMemory);
  report.localOk = report.usable &&
    report.processes.every((p) => p.lazyLocalPages === p.lazyPages);
  return report;
}

function inspectProcess(
  dir: ImageDir,
  pid: number,
  problems: string[],
): ProcessInfo {
  const info: ProcessInfo = {
    pid,
    hasMemory: false,
    vmas: 0,
    lazyPages: 0,
    lazyLocalPages: 0,
    parentPages: 0,
    presentPages: 0,
    zeroPages: 0,
    parentSources: {},
  };
  try {
    if (!dir.hasPagemap(pid)) return info; // a zombie has no memory images
    info.hasMemory = true;
    const { vmas } = dir.mm(pid);
    const pm = dir.pagemap(pid);
    info.vmas = vmas.length;
    const got = collectLazyRanges(pm.entries, vmas);
    for (const o of got.outside) {
      problems.push(
        `${pm.file}: lazy pages 0x${o.start.toString(16)}-0x${
          o.end.toString(16)
        } lie outside every VMA of mm-${pid}.img`,
      );
    }
    for (const e of pm.entries) {
      if (e.flags & PE_LAZY) {
        info.lazyPages += e.nrPages;
        if (e.flags & (PE_PRESENT | PE_PARENT)) {
          locatePages(dir, { pid, addr: e.vaddr, pages: e.nrPages });
          info.lazyLocalPages += e.nrPages;
        }
      } else if (e.flags & PE_PARENT) {
        info.parentPages += e.nrPages;
        for (
          const s of locatePages(dir, { pid, addr: e.vaddr, pages: e.nrPages })
        ) {
          const where = s.zero ? "(zero: in no image)" : s.dir.path;
          info.parentSources[where] = (info.parentSources[where] ?? 0) +
            s.pages;
        }
      }
      if (e.flags & PE_PRESENT) info.presentPages += e.nrPages;
    }
    info.zeroPages = uncovered(vmas.filter(canBeLazy), pm.entries);
  } catch (e) {
    if (!(e instanceof ImageError || e instanceof RangeError)) throw e;
    problems.push(`pid ${pid}: ${describe(e)}`);
  }
  return info;
}

/** Pages of `vmas` that no entry covers (both lists sorted). */
function uncovered(
  vmas: readonly { start: number; end: number }[],
  entries: readonly { vaddr: number; nrPages: number }[],
): number {
  let pages = 0;
  let i = 0;
  for (const v of vmas) {
    let covered = 0;
    while (
      i < entries.length &&
      entries[i].vaddr + entries[i].nrPages * PAGE_SIZE <= v.start
    ) i++;
    for (let j = i; j < entries.length && entries[j].vaddr < v.end; j++) {
      const s = Math.max(v.start, entries[j].vaddr);
      const e = Math.min(
        v.end,
        entries[j].vaddr + entries[j].nrPages * PAGE_SIZE,
      );
      if (e > s) covered += e - s;
    }
    pages += (v.end - v.start - covered) / PAGE_SIZE;
  }
  return pages;
}

/** The human-readable form of a report. */
export function formatReport(r: InspectReport): string {
  const lines = [`images ${r.dir}`];
  for (const [i, p] of r.parents.entries()) {
    lines.push(`${"  ".repeat(i + 1)}parent ${p}`);
  }
  const head = [
    "PID",
    "VMAS",
    "LAZY",
    "PARENT",
    "PRESENT",
    "ZERO",
    "PARENT PAGES FROM",
  ];
  const rows = r.processes.map((p) =>
    p.hasMemory
      ? [
        String(p.pid),
        String(p.vmas),
        String(p.lazyPages),
        String(p.parentPages),
        String(p.presentPages),
        String(p.zeroPages),
        Object.entries(p.parentSources).map(([d, n]) => `${d}:${n}`).join(
          " ",
        ) ||
        "-",
      ]
      : [String(p.pid), "-", "-", "-", "-", "-", "(zombie: no memory)"]
  );
  const width = head.map((h, c) =>
    Math.max(h.length, ...rows.map((row) => row[c].length))
  );
  for (const row of [head, ...rows]) {
    lines.push(
      row.map((cell, c) => c < row.length - 1 ? cell.padEnd(width[c]) : cell)
        .join("  "),
    );
  }
  if (r.problems.length === 0) lines.push("problems: none");
  else lines.push("problems:", ...r.problems.map((p) => `  ${p}`));
  lines.push(
    "lazy restore: " +
      (!r.usable
        ? "NOT possible"
        : r.localOk
        ? "ok from these images (lazyd -D DIR)"
        : "ok with --page-server (the lazy pages are on the source)"),
  );
  return lines.join("\n");
}
