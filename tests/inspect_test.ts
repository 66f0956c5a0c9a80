/**
 * `lazyd inspect` on synthetic image directories: the per-process counts,
 * where parent pages are, the problems, and the printed report. (Real
 * dumps, compared with crit: tests/e2e/inspect_test.ts.)
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  MAP_PRIVATE,
  PE_LAZY,
  PE_PARENT,
  PE_PRESENT,
  type SyntheticProcess,
  VMA_AREA_REGULAR,
  VMA_FILE_PRIVATE,
  writeImageDir,
} from "../src/images/mod.ts";
import {
  formatReport,
  inspect,
  type InspectReport,
  type ProcessInfo,
} from "../src/inspect.ts";

const P = 4096;
const A = 0x7f1200000000;
const B = 0x560000000000;

/** A scratch directory by its real path (parents are reported resolved). */
async function withTmp(fn: (tmp: string) => void | Promise<void>) {
  const tmp = Deno.realPathSync(
    Deno.makeTempDirSync({ prefix: "lazyd-inspect-" }),
  );
  try {
    await fn(tmp);
  } finally {
    Deno.removeSync(tmp, { recursive: true });
  }
}

/** pid 1: every kind of page; a parent directory holds part of them. */
function writeChain(tmp: string, extra: SyntheticProcess[] = []): string {
  const vmas = [
    {
      start: B,
      end: B + 4 * P,
      flags: MAP_PRIVATE,
      status: VMA_AREA_REGULAR | VMA_FILE_PRIVATE,
    },
    { start: A, end: A + 16 * P },
  ];
  writeImageDir(join(tmp, "p"), {
    processes: [{
      pid: 1,
      vmas,
      pagemap: [
        { vaddr: A, nrPages: 4, flags: PE_PRESENT },
        { vaddr: A + 8 * P, nrPages: 2, flags: PE_PRESENT },
      ],
    }],
  });
  writeImageDir(join(tmp, "top"), {
    parent: "../p",
    processes: [
      {
        pid: 1,
        vmas,
        pagemap: [
          // a file page: present, never lazy, not a zero candidate
          { vaddr: B, nrPages: 1, flags: PE_PRESENT },
          { vaddr: A, nrPages: 2, flags: PE_PARENT },
          { vaddr: A + 2 * P, nrPages: 2, flags: PE_LAZY | PE_PARENT },
          { vaddr: A + 4 * P, nrPages: 3, flags: PE_LAZY | PE_PRESENT },
          { vaddr: A + 7 * P, nrPages: 1, flags: PE_PRESENT },
          { vaddr: A + 8 * P, nrPages: 2, flags: PE_PARENT },
          // "in the parent", but the parent has nothing there
          { vaddr: A + 10 * P, nrPages: 1, flags: PE_PARENT },
          // A + 11 .. A + 16: no entry, zero pages
        ],
      },
      { pid: 2, ppid: 1 }, // a zombie
      ...extra,
    ],
  });
  return join(tmp, "top");
}

const PID1: ProcessInfo = {
  pid: 1,
  hasMemory: true,
  vmas: 2,
  lazyPages: 5,
  lazyLocalPages: 5,
  parentPages: 5,
  presentPages: 5,
  zeroPages: 5,
  parentSources: {}, // filled in per test (absolute paths)
};

const ZOMBIE: ProcessInfo = {
  pid: 2,
  hasMemory: false,
  vmas: 0,
  lazyPages: 0,
  lazyLocalPages: 0,
  parentPages: 0,
  presentPages: 0,
  zeroPages: 0,
  parentSources: {},
};

Deno.test("inspect: counts lazy, parent, present and zero pages per process", async () => {
  await withTmp((tmp) => {
    const top = writeChain(tmp);
    const r = inspect(top);
    assert.deepEqual(
      r,
      {
        dir: top,
        parents: [join(tmp, "p")],
        processes: [
          {
            ...PID1,
            parentSources: { [join(tmp, "p")]: 4, "(zero: in no image)": 1 },
          },
          ZOMBIE,
        ],
        problems: [],
        localOk: true,
        usable: true,
      } satisfies InspectReport,
    );
  });
});

Deno.test("inspect: lazy pages without local data need a page server", async () => {
  await withTmp((tmp) => {
    // pid 3 as `criu dump --lazy-pages` writes it: PE_LAZY alone.
    const top = writeChain(tmp, [{
      pid: 3,
      ppid: 1,
      vmas: [{ start: A, end: A + 8 * P }],
      pagemap: [
        { vaddr: A, nrPages: 1, flags: PE_PRESENT },
        { vaddr: A + P, nrPages: 6, flags: PE_LAZY },
      ],
    }]);
    const r = inspect(top);
    assert.deepEqual(r.problems, []);
    assert.deepEqual(r.processes[2], {
      pid: 3,
      hasMemory: true,
      vmas: 1,
      lazyPages: 6,
      lazyLocalPages: 0,
      parentPages: 0,
      presentPages: 1,
      zeroPages: 1,
      parentSources: {},
    });
    assert.equal(r.usable, true);
    assert.equal(r.localOk, false);
    assert.match(
      formatReport(r),
      /\nlazy restore: ok with --page-server \(the lazy pages are on the source\)$/,
    );
  });
});

Deno.test("inspect: bad images become problems, never exceptions", async () => {
  await withTmp((tmp) => {
    // No such directory.
    const none = inspect(join(tmp, "none"));
    assert.equal(none.usable, false);
    assert.equal(none.localOk, false);
    assert.deepEqual(none.processes, []);
    assert.equal(none.problems.length, 1);
    assert.match(
      none.problems[0],
      new RegExp(`^${join(tmp, "none")}: byte 0: `),
    );

    // A broken pstree.img.
    const top = writeChain(join(tmp, "a"));
    Deno.writeFileSync(join(top, "pstree.img"), new Uint8Array([9, 9, 9]));
    const bad = inspect(top);
    assert.equal(bad.usable, false);
    assert.match(bad.problems[0], /pstree\.img/);

    // A parent without the pagemap its child relies on.
    const top2 = writeChain(join(tmp, "b"));
    Deno.removeSync(join(tmp, "b", "p", "pagemap-1.img"));
    const orphan = inspect(top2);
    assert.equal(orphan.usable, false);
    assert.equal(orphan.localOk, false);
    assert.equal(orphan.problems.length, 1);
    assert.match(
      orphan.problems[0],
      /^pid 1: .*pages at 0x[0-9a-f]+ are in the parent image, but there is no .*pagemap-1\.img/,
    );
    // The other processes are still reported.
    assert.deepEqual(orphan.processes[1], ZOMBIE);

    // A short pages file behind lazy pages.
    const top3 = writeChain(join(tmp, "c"));
    Deno.truncateSync(join(top3, "pages-1.img"), 2 * P);
    const short = inspect(top3);
    assert.equal(short.usable, false);
    assert.match(short.problems[0], /^pid 1: .*pages file too short/);

    // A process whose mm image is missing.
    const top4 = writeChain(join(tmp, "d"));
    Deno.removeSync(join(top4, "mm-1.img"));
    const nomm = inspect(top4);
    assert.equal(nomm.usable, false);
    assert.match(nomm.problems[0], /^pid 1: .*mm-1\.img/);
  });
});

Deno.test("inspect: lazy pages outside every VMA are a problem", async () => {
  await withTmp((tmp) => {
    writeImageDir(tmp, {
      processes: [{
        pid: 5,
        vmas: [{ start: A, end: A + 2 * P }],
        pagemap: [{ vaddr: A + P, nrPages: 3, flags: PE_LAZY | PE_PRESENT }],
      }],
    });
    const r = inspect(tmp);
    assert.deepEqual(r.problems, [
      `${join(tmp, "pagemap-5.img")}: lazy pages 0x${
        (A + 2 * P).toString(16)
      }-0x${(A + 4 * P).toString(16)} lie outside every VMA of mm-5.img`,
    ]);
    assert.equal(r.usable, false);
    assert.equal(r.processes[0].lazyPages, 3);
  });
});

Deno.test("inspect: only zombies is not a usable lazy restore", async () => {
  await withTmp((tmp) => {
    writeImageDir(tmp, { processes: [{ pid: 1 }, { pid: 2, ppid: 1 }] });
    const r = inspect(tmp);
    assert.deepEqual(r.problems, []);
    assert.deepEqual(r.processes.map((p) => p.hasMemory), [false, false]);
    assert.equal(r.usable, false);
    assert.match(formatReport(r), /\nlazy restore: NOT possible$/);
  });
});

Deno.test("formatReport: the table, the parent chain, the problems, the verdict", async () => {
  await withTmp((tmp) => {
    const top = writeChain(tmp);
    const text = formatReport(inspect(top));
    const lines = text.split("\n");
    assert.equal(lines[0], `images ${top}`);
    assert.equal(lines[1], `  parent ${join(tmp, "p")}`);
    const cells = (l: string) => l.split(/ {2,}/);
    assert.deepEqual(cells(lines[2]), [
      "PID",
      "VMAS",
      "LAZY",
      "PARENT",
      "PRESENT",
      "ZERO",
      "PARENT PAGES FROM",
    ]);
    assert.deepEqual(cells(lines[3]), [
      "1",
      "2",
      "5",
      "5",
      "5",
      "5",
      `${join(tmp, "p")}:4 (zero: in no image):1`,
    ]);
    assert.deepEqual(cells(lines[4]), [
      "2",
      "-",
      "-",
      "-",
      "-",
      "-",
      "(zombie: no memory)",
    ]);
    // Columns line up: every cell starts where its header does.
    const col = lines[2].indexOf("PRESENT");
    assert.equal(lines[3].slice(col, col + 2), "5 ");
    assert.equal(lines[4].slice(col, col + 2), "- ");
    assert.equal(lines[5], "problems: none");
    assert.equal(lines[6], "lazy restore: ok from these images (lazyd -D DIR)");
    assert.equal(lines.length, 7);

    // Problems are listed, indented, and the verdict is negative.
    const bad: InspectReport = {
      dir: "/x",
      parents: [],
      processes: [],
      problems: ["first thing", "second thing"],
      localOk: false,
      usable: false,
    };
    assert.equal(
      formatReport(bad),
      [
        "images /x",
        "PID  VMAS  LAZY  PARENT  PRESENT  ZERO  PARENT PAGES FROM",
        "problems:",
        "  first thing",
        "  second thing",
        "lazy restore: NOT possible",
      ].join("\n"),
    );
  });
});
