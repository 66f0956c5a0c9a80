/**
 * `lazyd inspect --json` on real CRIU 4.1.1 dumps agrees with `crit show`
 * of their pstree, mm and pagemap images: a plain `criu dump`, a `criu dump
 * --lazy-pages` (lazy pages left on the source), and a parent chain made
 * from the plain dump.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import type { InspectReport, ProcessInfo } from "../../src/inspect.ts";
import {
  critBig,
  critFlags,
  type CritImage,
  critShow,
} from "../images/_crit.ts";
import { CRIT, e2eTest, lazydCommand, run, runOk } from "./env.ts";
import { splitDump } from "./split_dump.ts";
import { makeRealDumps } from "../images/_real_dump.ts";

const PAGE = 4096n;

const PE_PARENT = 1;
const PE_LAZY = 2;
const PE_PRESENT = 4;
const MAP_PRIVATE = 0x2;
const MAP_ANON = 0x20;
const MAP_LOCKED = 0x2000;
const MAP_HUGETLB = 0x40000;
const VMA_AREA_VSYSCALL = 1 << 2;
const VMA_AREA_VDSO = 1 << 3;
const VMA_AREA_VVAR = 1 << 12;

/**
 * What crit says one process's report must be (its own constants and
 * arithmetic below, so that a mistake in src/ is not mirrored here).
 */
type Expected = Omit<ProcessInfo, "parentSources">;

interface CritVma {
  start: string;
  end: string;
  flags: string;
  status: string;
}

interface CritEntry {
  vaddr: string;
  nr_pages: number;
  flags: string;
}

/**
 * `crit show` of every file, as one JSON object by path. crit is Python
 * with a pure-Python protobuf runtime and takes seconds to start, so when
 * its wrapper script names its PYTHONPATH the files are decoded in one
 * Python process with the call `crit show` makes
 * (`pycriu.images.load(f, pretty=True)`); otherwise crit runs per file.
 */
async function critShowAll(files: string[]): Promise<Map<string, CritImage>> {
  const out = new Map<string, CritImage>();
  let pythonPath: string | undefined;
  try {
    pythonPath = Deno.readTextFileSync(CRIT).match(/^PYTHONPATH='([^']*)'$/m)
      ?.[1];
  } catch { /* a binary crit */ }
  if (pythonPath === undefined) {
    const all = await Promise.all(files.map((f) => critShow(f)));
    files.forEach((f, i) => out.set(f, all[i]));
    return out;
  }
  const code = [
    "import json, sys, pycriu",
    "out = {}",
    "for f in sys.argv[1:]:",
    "    with open(f, 'rb') as fh:",
    "        out[f] = pycriu.images.load(fh, True, False)",
    "json.dump(out, sys.stdout)",
  ].join("\n");
  const r = await runOk("python3", ["-s", "-c", code, ...files], {
    env: {
      PYTHONPATH: pythonPath,
      PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION: "python",
    },
  });
  for (const [f, img] of Object.entries(JSON.parse(r.stdout))) {
    out.set(f, img as CritImage);
  }
  return out;
}

/** The pstree, mm and pagemap images of the processes in `dir`. */
function imageFiles(dir: string): string[] {
  return [...Deno.readDirSync(dir)]
    .map((e) => e.name)
    .filter((n) => /^(pstree|mm-\d+|pagemap-\d+)\.img$/.test(n))
    .map((n) => join(dir, n));
}

/** The report's numbers, computed from crit's JSON alone. */
function fromCrit(dir: string, crit: Map<string, CritImage>): Expected[] {
  const show = (name: string) => {
    const img = crit.get(join(dir, name));
    assert.ok(img, `crit output for ${join(dir, name)}`);
    return img;
  };
  const pstree = show("pstree.img").entries;
  const out: Expected[] = [];
  for (const { pid } of pstree as { pid: number }[]) {
    const e: Expected = {
      pid,
      hasMemory: false,
      vmas: 0,
      lazyPages: 0,
      lazyLocalPages: 0,
      parentPages: 0,
      presentPages: 0,
      zeroPages: 0,
    };
    out.push(e);
    if (!crit.has(join(dir, `pagemap-${pid}.img`))) continue; // a zombie
    e.hasMemory = true;
    const vmas: CritVma[] = show(`mm-${pid}.img`).entries[0].vmas;
    const [_head, ...entries]: CritEntry[] = show(`pagemap-${pid}.img`).entries;
    // lazyd leaves out the vsyscall page (above 2^53, never restored).
    e.vmas = vmas.filter((v) =>
      !(critBig(v.start) >= 2n ** 53n &&
        critFlags(v.status) & VMA_AREA_VSYSCALL)
    ).length;
    for (const x of entries) {
      const f = critFlags(x.flags);
      if (f & PE_LAZY) {
        e.lazyPages += x.nr_pages;
        if (f & (PE_PRESENT | PE_PARENT)) e.lazyLocalPages += x.nr_pages;
      } else if (f & PE_PARENT) e.parentPages += x.nr_pages;
      if (f & PE_PRESENT) e.presentPages += x.nr_pages;
    }
    // Pages of VMAs that can be lazy which no entry covers.
    let zero = 0n;
    for (const v of vmas) {
      const flags = critFlags(v.flags);
      const status = critFlags(v.status);
      const lazyable = (flags & MAP_ANON) && (flags & MAP_PRIVATE) &&
        !(flags & (MAP_LOCKED | MAP_HUGETLB)) &&
        !(status & (VMA_AREA_VDSO | VMA_AREA_VVAR | VMA_AREA_VSYSCALL));
      if (!lazyable) continue;
      const start = critBig(v.start);
      const end = critBig(v.end);
      let covered = 0n;
      for (const x of entries) {
        const s = critBig(x.vaddr);
        const t = s + BigInt(x.nr_pages) * PAGE;
        const lo = s > start ? s : start;
        const hi = t < end ? t : end;
        if (hi > lo) covered += hi - lo;
      }
      zero += (end - start - covered) / PAGE;
    }
    e.zeroPages = Number(zero);
  }
  return out;
}

async function inspectJson(dir: string): Promise<InspectReport> {
  const [cmd, ...pre] = lazydCommand();
  const r = await run(cmd, [...pre, "inspect", "-D", dir, "--json"]);
  assert.equal(r.code, 0, `lazyd inspect exited ${r.code}: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

/** lazyd's report matches crit's numbers; returns the report. */
async function agrees(
  dir: string,
  crit: Map<string, CritImage>,
): Promise<InspectReport> {
  const report = await inspectJson(dir);
  assert.deepEqual(report.problems, []);
  assert.deepEqual(
    report.processes.map(({ parentSources: _, ...rest }) => rest),
    fromCrit(dir, crit),
  );
  // The workload: a root, a child with memory, a zombie.
  assert.equal(report.processes.length, 3);
  assert.equal(report.processes.filter((p) => p.hasMemory).length, 2);
  for (const p of report.processes.filter((p) => p.hasMemory)) {
    assert.ok(p.vmas > 0);
  }
  return report;
}

/** Both processes with memory have their 2 MiB buffer lazy. */
function buffersLazy(r: InspectReport): void {
  for (const p of r.processes.filter((p) => p.hasMemory)) {
    assert.ok(p.lazyPages >= 512, `pid ${p.pid}: ${p.lazyPages} lazy pages`);
  }
}

e2eTest("inspect: lazyd inspect --json agrees with crit on real dumps", {
  needs: ["root", "criu", "crit", "gcc"],
}, async (t) => {
  const { base, plain, lazy } = await makeRealDumps({ sizeMiB: 2 });
  try {
    const split = await splitDump(plain, {
      parent: join(base, "chain-parent"),
      child: join(base, "chain-child"),
    }, { slice: 16, pattern: ["lazy", "parent", "lazy-parent"] });
    const crit = await critShowAll(
      [plain, lazy, split.child].flatMap(imageFiles),
    );

    await t.step("criu dump: every lazy page is here", async () => {
      const r = await agrees(plain, crit);
      buffersLazy(r);
      assert.equal(r.dir, plain);
      assert.deepEqual(r.parents, []);
      assert.equal(r.usable, true);
      assert.equal(r.localOk, true);
      for (const p of r.processes) {
        assert.equal(p.lazyLocalPages, p.lazyPages);
        assert.deepEqual(p.parentSources, {});
      }
      const [cmd, ...pre] = lazydCommand();
      const text = await run(cmd, [...pre, "inspect", "-D", plain]);
      assert.equal(text.code, 0);
      assert.match(text.stdout, /^PID {2}VMAS {2}LAZY/m);
      assert.match(text.stdout, /^2 +- +- +- +- +- +\(zombie: no memory\)$/m);
      assert.match(
        text.stdout,
        /\nlazy restore: ok from these images \(lazyd -D DIR\)\n$/,
      );
    });

    await t.step(
      "criu dump --lazy-pages: the lazy pages are on the source",
      async () => {
        const r = await agrees(lazy, crit);
        buffersLazy(r);
        assert.equal(r.usable, true);
        assert.equal(r.localOk, false);
        for (const p of r.processes) assert.equal(p.lazyLocalPages, 0);
        const [cmd, ...pre] = lazydCommand();
        const text = await run(cmd, [...pre, "inspect", "-D", lazy]);
        assert.equal(text.code, 0, "usable (with --page-server): exit 0");
        assert.match(text.stdout, /\nlazy restore: ok with --page-server/);
      },
    );

    await t.step(
      "a parent chain: parent pages and where they are",
      async () => {
        const r = await agrees(split.child, crit);
        const parent = Deno.realPathSync(split.parent);
        assert.deepEqual(r.parents, [parent]);
        assert.equal(r.localOk, true);
        const sum = (f: (p: InspectReport["processes"][0]) => number) =>
          r.processes.reduce((a, p) => a + f(p), 0);
        assert.equal(sum((p) => p.parentPages), split.parentOnly);
        assert.equal(
          sum((p) => p.lazyPages),
          split.lazyHere + split.lazyInParent,
        );
        assert.ok(split.parentOnly > 0 && split.lazyInParent > 0);
        for (const p of r.processes.filter((p) => p.parentPages > 0)) {
          assert.deepEqual(p.parentSources, { [parent]: p.parentPages });
        }
      },
    );
  } finally {
    Deno.removeSync(base, { recursive: true });
  }
});
