/**
 * makePlan on synthetic image directories: what the daemon will deliver,
 * and the image problems that stop it before it listens.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { makePlan } from "../../src/daemon/plan.ts";
import {
  ImageDir,
  ImageError,
  PE_LAZY,
  PE_PARENT,
  PE_PRESENT,
  type SyntheticProcess,
  writeImageDir,
} from "../../src/images/mod.ts";
import { withTemp } from "./_helpers.ts";

const P = 4096;
const LAZY = PE_LAZY | PE_PRESENT;
const A = 0x400000;

/** Asserts that `fn` throws an ImageError whose message matches `re`. */
function imageError(fn: () => unknown, re: RegExp): ImageError {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof ImageError, `expected ImageError, got ${caught}`);
  assert.match(caught.message, re);
  return caught;
}

function plan(dir: string, local = true) {
  return makePlan(ImageDir.open(dir), { local });
}

Deno.test("plan: pids in pstree order, lazy ranges split at VMA boundaries", async () => {
  await withTemp("plan", (tmp) => {
    writeImageDir(tmp, {
      processes: [
        {
          pid: 10,
          // Two adjacent VMAs and a third one further up.
          vmas: [
            { start: A, end: A + 4 * P },
            { start: A + 4 * P, end: A + 8 * P },
            { start: A + 16 * P, end: A + 20 * P },
          ],
          pagemap: [
            { vaddr: A, nrPages: 1, flags: PE_PRESENT }, // restored eagerly
            { vaddr: A + 2 * P, nrPages: 4, flags: LAZY }, // spans two VMAs
            { vaddr: A + 7 * P, nrPages: 1, flags: PE_PRESENT },
            { vaddr: A + 17 * P, nrPages: 2, flags: LAZY },
          ],
        },
        {
          pid: 11,
          ppid: 10,
          vmas: [{ start: A, end: A + 2 * P }],
          pagemap: [{ vaddr: A, nrPages: 2, flags: PE_PRESENT }],
        },
      ],
    });
    const p = plan(tmp);
    assert.deepEqual(p.pids, [10, 11]);
    assert.deepEqual([...p.processes.keys()], [10, 11]);
    assert.deepEqual(p.processes.get(10), {
      pid: 10,
      vmas: 3,
      ranges: [
        { start: A + 2 * P, end: A + 4 * P, image: A + 2 * P },
        { start: A + 4 * P, end: A + 6 * P, image: A + 4 * P },
        { start: A + 17 * P, end: A + 19 * P, image: A + 17 * P },
      ],
      lazyPages: 6,
    });
    // A process without lazy pages still has a plan: restore sends its
    // uffd like any other.
    assert.deepEqual(p.processes.get(11), {
      pid: 11,
      vmas: 1,
      ranges: [],
      lazyPages: 0,
    });
  });
});

Deno.test("plan: a zombie (pstree entry without memory images) has no plan", async () => {
  await withTemp("plan", (tmp) => {
    writeImageDir(tmp, {
      processes: [
        {
          pid: 1,
          vmas: [{ start: A, end: A + P }],
          pagemap: [{ vaddr: A, nrPages: 1, flags: LAZY }],
        },
        { pid: 2, ppid: 1 }, // no mm, no pagemap
        { pid: 3, ppid: 1, vmas: [{ start: A, end: A + P }], pagemap: [] },
      ],
    });
    const p = plan(tmp);
    assert.deepEqual(p.pids, [1, 2, 3]);
    assert.deepEqual([...p.processes.keys()], [1, 3]);
    assert.equal(p.processes.get(1)!.lazyPages, 1);
    assert.deepEqual(p.processes.get(3)!.ranges, []);
  });
});

Deno.test("plan: a pid twice in pstree.img is an ImageError", async () => {
  await withTemp("plan", (tmp) => {
    writeImageDir(tmp, {
      processes: [
        { pid: 5 },
        { pid: 6, ppid: 5 },
        { pid: 5, ppid: 6 },
      ],
    });
    // pstree.img's reader already refuses it (makePlan checks again).
    const e = imageError(
      () => plan(tmp),
      /duplicate pid 5|pid 5 appears twice/,
    );
    assert.equal(e.file, join(tmp, "pstree.img"));
  });
});

Deno.test("plan: lazy pieces outside every VMA are an ImageError", async () => {
  await withTemp("plan", (tmp) => {
    writeImageDir(tmp, {
      processes: [{
        pid: 7,
        vmas: [{ start: A, end: A + 2 * P }],
        pagemap: [
          // Half of it sticks out of the VMA.
          { vaddr: A + P, nrPages: 2, flags: LAZY },
          { vaddr: A + 8 * P, nrPages: 1, flags: LAZY },
        ],
      }],
    });
    const e = imageError(
      () => plan(tmp),
      /2 lazy piece\(s\) outside every VMA of mm-7\.img, first 0x402000-0x403000/,
    );
    assert.equal(e.file, join(tmp, "pagemap-7.img"));
    // Whatever the source of the pages: this is about the images.
    imageError(() => plan(tmp, false), /outside every VMA/);
  });
});

Deno.test("plan: PE_PRESENT or PE_PARENT pages outside VMAs are not lazy, so not checked", async () => {
  await withTemp("plan", (tmp) => {
    writeImageDir(tmp, {
      processes: [{
        pid: 7,
        vmas: [{ start: A, end: A + P }],
        pagemap: [{ vaddr: A + 4 * P, nrPages: 1, flags: PE_PRESENT }],
      }],
    });
    assert.deepEqual(plan(tmp).processes.get(7)!.ranges, []);
  });
});

Deno.test("plan: lazy pages without data need --page-server in local mode", async () => {
  await withTemp("plan", (tmp) => {
    // What `criu dump --lazy-pages` writes: PE_LAZY alone, no pages data.
    writeImageDir(tmp, {
      processes: [{
        pid: 8,
        vmas: [{ start: A, end: A + 4 * P }],
        pagemap: [
          { vaddr: A, nrPages: 1, flags: PE_PRESENT },
          { vaddr: A + P, nrPages: 3, flags: PE_LAZY },
        ],
      }],
    });
    const e = imageError(
      () => plan(tmp),
      /lazy entry 0x401000 \(3 pages\) has no data in these images.*--page-server/,
    );
    assert.equal(e.file, join(tmp, "pagemap-8.img"));
    assert.ok(e.offset > 0, "names the entry's record");
    // With a page server the same images are fine.
    const p = plan(tmp, false);
    assert.deepEqual(p.processes.get(8)!.ranges, [
      { start: A + P, end: A + 4 * P, image: A + P },
    ]);
    assert.equal(p.processes.get(8)!.lazyPages, 3);
  });
});

Deno.test("plan: a short pages file is found up front in local mode", async () => {
  await withTemp("plan", (tmp) => {
    writeImageDir(tmp, {
      processes: [{
        pid: 9,
        vmas: [{ start: A, end: A + 4 * P }],
        pagemap: [{ vaddr: A, nrPages: 4, flags: LAZY }],
      }],
    });
    Deno.truncateSync(join(tmp, "pages-1.img"), 3 * P);
    const e = imageError(() => plan(tmp), /pages file too short/);
    assert.equal(e.file, join(tmp, "pages-1.img"));
    // Not read at all when the pages come from a page server.
    assert.equal(plan(tmp, false).processes.get(9)!.lazyPages, 4);
  });
});

Deno.test("plan: PE_LAZY|PE_PARENT is accepted when a parent holds the pages", async () => {
  await withTemp("plan", (tmp) => {
    const vmas = [{ start: A, end: A + 8 * P }];
    const proc = (pagemap: SyntheticProcess["pagemap"]) => ({
      pid: 4,
      vmas,
      pagemap,
    });
    writeImageDir(join(tmp, "gp"), {
      processes: [proc([{ vaddr: A, nrPages: 8, flags: PE_PRESENT }])],
    });
    writeImageDir(join(tmp, "p"), {
      parent: "../gp",
      processes: [proc([
        { vaddr: A, nrPages: 4, flags: PE_PARENT },
        { vaddr: A + 4 * P, nrPages: 4, flags: PE_PRESENT },
      ])],
    });
    writeImageDir(join(tmp, "top"), {
      parent: "../p",
      processes: [proc([
        { vaddr: A, nrPages: 2, flags: PE_PARENT }, // restore's, not ours
        { vaddr: A + 2 * P, nrPages: 4, flags: PE_LAZY | PE_PARENT },
        { vaddr: A + 6 * P, nrPages: 2, flags: LAZY },
      ])],
    });
    const p = plan(join(tmp, "top"));
    assert.deepEqual(p.processes.get(4), {
      pid: 4,
      vmas: 1,
      ranges: [
        { start: A + 2 * P, end: A + 6 * P, image: A + 2 * P },
        { start: A + 6 * P, end: A + 8 * P, image: A + 6 * P },
      ],
      lazyPages: 6,
    });

    // Without the parent's pagemap the chain cannot supply them.
    Deno.removeSync(join(tmp, "p", "pagemap-4.img"));
    imageError(
      () => plan(join(tmp, "top")),
      /in the parent image, but there is no .*pagemap-4\.img/,
    );
    // Without a parent link at all.
    Deno.removeSync(join(tmp, "top", "parent"));
    imageError(() => plan(join(tmp, "top")), /no parent directory/);
  });
});

Deno.test("plan: missing or broken images are ImageErrors", async () => {
  await withTemp("plan", (tmp) => {
    const good = {
      processes: [{
        pid: 3,
        vmas: [{ start: A, end: A + P }],
        pagemap: [{ vaddr: A, nrPages: 1, flags: LAZY }],
      }],
    };
    writeImageDir(join(tmp, "noinv"), good);
    Deno.removeSync(join(tmp, "noinv", "inventory.img"));
    imageError(() => plan(join(tmp, "noinv")), /inventory\.img/);

    writeImageDir(join(tmp, "nomm"), good);
    Deno.removeSync(join(tmp, "nomm", "mm-3.img"));
    imageError(() => plan(join(tmp, "nomm")), /mm-3\.img/);

    writeImageDir(join(tmp, "badpstree"), good);
    Deno.writeFileSync(
      join(tmp, "badpstree", "pstree.img"),
      new Uint8Array([1, 2, 3]),
    );
    imageError(() => plan(join(tmp, "badpstree")), /pstree\.img/);
  });
});
