import assert from "node:assert/strict";
import { join } from "node:path";
import {
  type DataSegment,
  ImageDir,
  locatePages,
  PAGE_SIZE,
  type PageSegment,
  PE_LAZY,
  PE_PARENT,
  PE_PRESENT,
  writeImageDir,
} from "../../src/images/mod.ts";
import {
  assertImageError,
  readSegment,
  stamps,
  withTempDir,
} from "./_helpers.ts";

const P = PAGE_SIZE;
const GiB = 1024 ** 3;

/**
 * Three levels for pid 7; "1" is the oldest. Tags in the page stamps say
 * which level's pages file a page came from.
 */
function threeLevels(tmp: string): ImageDir {
  writeImageDir(join(tmp, "1"), {
    tag: 1,
    processes: [{
      pid: 7,
      pagemap: [
        { vaddr: 0x10000, nrPages: 16, flags: PE_PRESENT },
        { vaddr: 0x30000, nrPages: 2, flags: PE_LAZY | PE_PRESENT },
        { vaddr: 0x70000, nrPages: 1, flags: PE_PARENT },
      ],
    }],
  });
  writeImageDir(join(tmp, "2"), {
    tag: 2,
    parent: "../1",
    processes: [{
      pid: 7,
      pagemap: [
        { vaddr: 0x10000, nrPages: 4, flags: PE_PARENT },
        { vaddr: 0x14000, nrPages: 4, flags: PE_PRESENT },
        { vaddr: 0x18000, nrPages: 8, flags: PE_PARENT },
        { vaddr: 0x30000, nrPages: 2, flags: PE_PARENT },
        { vaddr: 0x70000, nrPages: 1, flags: PE_PARENT },
      ],
    }],
  });
  writeImageDir(join(tmp, "3"), {
    tag: 3,
    parent: "../2",
    processes: [{
      pid: 7,
      pagemap: [
        { vaddr: 0x10000, nrPages: 16, flags: PE_PARENT },
        { vaddr: 0x30000, nrPages: 2, flags: PE_LAZY | PE_PARENT },
        { vaddr: 0x40000, nrPages: 2, flags: PE_LAZY | PE_PRESENT },
        { vaddr: 0x50000, nrPages: 1, flags: PE_LAZY },
        { vaddr: 0x60000, nrPages: 2, flags: PE_PARENT },
        { vaddr: 0x70000, nrPages: 1, flags: PE_PARENT },
      ],
    }, {
      pid: 8,
      pagemap: [{ vaddr: 0x10000, nrPages: 1, flags: PE_PARENT }],
    }],
  });
  return ImageDir.open(join(tmp, "3"));
}

/** Segments without the ImageDir objects, plus which level each came from. */
function summary(segs: PageSegment[]) {
  return segs.map((s) =>
    s.zero ? { zero: true, addr: s.addr, pages: s.pages } : {
      level: s.dir.depth,
      addr: s.addr,
      pages: s.pages,
      offset: s.offset,
    }
  );
}

/** Checks that each data page's stamp is its address, and returns the tags. */
function tags(segs: PageSegment[]): number[] {
  return segs.flatMap((s) => {
    const st = stamps(readSegment(s));
    st.forEach((x, i) => {
      if (!s.zero) assert.equal(x.addr, s.addr + i * P);
    });
    return s.zero ? st.map(() => 0) : st.map((x) => x.tag);
  });
}

Deno.test("locatePages: a parent run splits across the parent's shorter entries", async () => {
  await withTempDir((tmp) => {
    const top = threeLevels(tmp);
    const segs = locatePages(top, { pid: 7, addr: 0x10000, pages: 16 });
    assert.deepEqual(summary(segs), [
      { level: 2, addr: 0x10000, pages: 4, offset: 0 },
      { level: 1, addr: 0x14000, pages: 4, offset: 0 },
      { level: 2, addr: 0x18000, pages: 8, offset: 8 * P },
    ]);
    assert.deepEqual(tags(segs), [
      ...Array(4).fill(1),
      ...Array(4).fill(2),
      ...Array(8).fill(1),
    ]);
    assert.equal(
      (segs[0] as DataSegment).file,
      join(Deno.realPathSync(tmp), "1", "pages-1.img"),
    );
    // Part of a run, starting inside an entry.
    assert.deepEqual(
      summary(locatePages(top, { pid: 7, addr: 0x12000, pages: 4 })),
      [
        { level: 2, addr: 0x12000, pages: 2, offset: 2 * P },
        { level: 1, addr: 0x14000, pages: 2, offset: 0 },
      ],
    );
  });
});

Deno.test("locatePages: PE_LAZY|PE_PARENT is read from the parent chain", async () => {
  await withTempDir((tmp) => {
    const segs = locatePages(threeLevels(tmp), {
      pid: 7,
      addr: 0x30000,
      pages: 2,
    });
    // level 1's pages file: 16 pages of the first entry, then these two
    assert.deepEqual(summary(segs), [{
      level: 2,
      addr: 0x30000,
      pages: 2,
      offset: 16 * P,
    }]);
    assert.deepEqual(tags(segs), [1, 1]);
  });
});

Deno.test("locatePages: local data, and zeros where no entry covers", async () => {
  await withTempDir((tmp) => {
    const top = threeLevels(tmp);
    assert.deepEqual(
      summary(locatePages(top, { pid: 7, addr: 0x3e000, pages: 6 })),
      [
        { zero: true, addr: 0x3e000, pages: 2 },
        { level: 0, addr: 0x40000, pages: 2, offset: 0 },
        { zero: true, addr: 0x42000, pages: 2 },
      ],
    );
    assert.deepEqual(
      tags(locatePages(top, { pid: 7, addr: 0x40000, pages: 2 })),
      [3, 3],
    );
    // Below, between and above all entries.
    assert.deepEqual(summary(locatePages(top, { pid: 7, addr: 0, pages: 1 })), [
      { zero: true, addr: 0, pages: 1 },
    ]);
    assert.deepEqual(
      summary(locatePages(top, { pid: 7, addr: 0x7f0000000000, pages: 3 })),
      [
        { zero: true, addr: 0x7f0000000000, pages: 3 },
      ],
    );
    // In the parent chain but not in the parent's pagemap: never dumped, zero.
    assert.deepEqual(
      summary(locatePages(top, { pid: 7, addr: 0x60000, pages: 2 })),
      [
        { zero: true, addr: 0x60000, pages: 2 },
      ],
    );
  });
});

Deno.test("locatePages: a request across levels and gaps covers it exactly", async () => {
  await withTempDir((tmp) => {
    const top = threeLevels(tmp);
    const segs = locatePages(top, { pid: 7, addr: 0x8000, pages: 0x3c });
    assert.equal(segs[0].addr, 0x8000);
    let at = 0x8000;
    for (const s of segs) {
      assert.equal(s.addr, at);
      assert.ok(s.pages >= 1);
      at += s.pages * P;
    }
    assert.equal(at, 0x8000 + 0x3c * P);
    // Adjacent zero pieces from different levels are joined.
    assert.ok(segs.every((s, i) => i === 0 || !(s.zero && segs[i - 1].zero)));
  });
});

Deno.test("locatePages: lazy pages without data are refused", async () => {
  await withTempDir((tmp) => {
    const top = threeLevels(tmp);
    const err = assertImageError(
      () => locatePages(top, { pid: 7, addr: 0x4f000, pages: 2 }),
      {
        file: join(tmp, "3", "pagemap-7.img"),
        reason:
          /^lazy pages without data: dump was made with --lazy-pages; use --page-server/,
      },
    );
    assert.ok(err.offset > 14, "names the entry's record");
  });
});

Deno.test("locatePages: a parent hole needs a parent with the process's pagemap", async () => {
  await withTempDir((tmp) => {
    const top = threeLevels(tmp);
    assertImageError(
      () => locatePages(top, { pid: 8, addr: 0x10000, pages: 1 }),
      {
        file: join(tmp, "3", "pagemap-8.img"),
        reason: /in the parent image, but there is no .*\/2\/pagemap-8.img/,
      },
    );
    // Level 1 marks 0x70000 as a parent hole but has no parent.
    assertImageError(
      () => locatePages(top, { pid: 7, addr: 0x70000, pages: 1 }),
      {
        file: join(Deno.realPathSync(tmp), "1", "pagemap-7.img"),
        reason: /in the parent image, but there is no parent directory/,
      },
    );
  });
});

Deno.test("locatePages: data beyond the end of the pages file", async () => {
  await withTempDir((tmp) => {
    const top = threeLevels(tmp);
    const pages = join(Deno.realPathSync(tmp), "1", "pages-1.img");
    Deno.truncateSync(pages, 17 * P);
    assert.equal(
      locatePages(top, { pid: 7, addr: 0x10000, pages: 4 }).length,
      1,
    );
    assertImageError(
      () => locatePages(top, { pid: 7, addr: 0x30000, pages: 2 }),
      {
        file: pages,
        offset: 16 * P,
        reason: /^pages file too short: 69632 bytes/,
      },
    );
  });
});

Deno.test("locatePages: a missing pages file reads as empty, so too short", async () => {
  await withTempDir((tmp) => {
    writeImageDir(tmp, {
      processes: [{
        pid: 1,
        pagemap: [{ vaddr: 0x1000, nrPages: 1, flags: PE_PRESENT }],
      }],
    });
    Deno.removeSync(join(tmp, "pages-1.img"));
    assertImageError(
      () => locatePages(ImageDir.open(tmp), { pid: 1, addr: 0x1000, pages: 1 }),
      {
        file: join(tmp, "pages-1.img"),
        offset: 0,
        reason: /pages file too short: 0 bytes/,
      },
    );
  });
});

Deno.test("locatePages: addresses above 4 GiB, runs longer than 4 GiB", async () => {
  await withTempDir((tmp) => {
    const big = 4 * GiB / P + 16;
    writeImageDir(tmp, {
      pages: "first",
      tag: 9,
      processes: [{
        pid: 1,
        pagemap: [
          { vaddr: 0x100000000, nrPages: 1, flags: PE_PRESENT },
          {
            vaddr: 0x7f0000000000,
            nrPages: big,
            flags: PE_LAZY | PE_PRESENT,
            nrPages64: true,
          },
          {
            vaddr: 0x7f0000000000 + big * P,
            nrPages: 1,
            flags: PE_LAZY | PE_PRESENT,
          },
        ],
      }],
    });
    const dir = ImageDir.open(tmp);
    assert.equal(dir.pagesFile(1).size, (2 + big) * P);
    const deep = locatePages(dir, {
      pid: 1,
      addr: 0x7f0000000000 + 4 * GiB,
      pages: 32,
    });
    // The last 16 pages of the big entry and the next entry are contiguous
    // in memory and in the file: one segment; then nothing is dumped.
    assert.deepEqual(summary(deep), [
      {
        level: 0,
        addr: 0x7f0000000000 + 4 * GiB,
        pages: 17,
        offset: P + 4 * GiB,
      },
      { zero: true, addr: 0x7f0000000000 + (big + 1) * P, pages: 15 },
    ]);
    const last = locatePages(dir, {
      pid: 1,
      addr: 0x7f0000000000 + big * P,
      pages: 1,
    });
    assert.equal((last[0] as DataSegment).offset, (1 + big) * P);
    assert.deepEqual(stamps(readSegment(last[0])), [{
      addr: 0x7f0000000000 + big * P,
      tag: 9,
    }]);
    assert.deepEqual(
      tags(locatePages(dir, { pid: 1, addr: 0x100000000, pages: 1 })),
      [9],
    );
  });
});

Deno.test("locatePages: bad requests are RangeErrors", async () => {
  await withTempDir((tmp) => {
    const top = threeLevels(tmp);
    for (
      const r of [{ addr: 0x1001, pages: 1 }, { addr: 0x1000, pages: 0 }, {
        addr: -4096,
        pages: 1,
      }, { addr: 2 ** 53 - P, pages: 2 }]
    ) {
      assert.throws(() => locatePages(top, { pid: 7, ...r }), RangeError);
    }
  });
});

Deno.test("locatePages: fast enough to call per fault", async () => {
  await withTempDir((tmp) => {
    const n = 20_000;
    writeImageDir(join(tmp, "1"), {
      pages: "first",
      processes: [{
        pid: 1,
        pagemap: Array.from(
          { length: n },
          (_, i) => ({
            vaddr: 0x10000000 + i * 4 * P,
            nrPages: 2,
            flags: PE_PRESENT,
          }),
        ),
      }],
    });
    writeImageDir(join(tmp, "2"), {
      parent: "../1",
      pages: "first",
      processes: [{
        pid: 1,
        pagemap: Array.from({ length: n }, (_, i) => ({
          vaddr: 0x10000000 + i * 4 * P,
          nrPages: 3,
          flags: i % 2 ? PE_LAZY | PE_PRESENT : PE_LAZY | PE_PARENT,
        })),
      }],
    });
    const dir = ImageDir.open(join(tmp, "2"));
    locatePages(dir, { pid: 1, addr: 0x10000000, pages: 1 }); // parse and cache
    const calls = 100_000;
    const t0 = performance.now();
    for (let i = 0; i < calls; i++) {
      const k = (i * 7919) % n;
      locatePages(dir, { pid: 1, addr: 0x10000000 + k * 4 * P + P, pages: 2 });
    }
    const ms = performance.now() - t0;
    assert.ok(ms < 2000, `${calls} lookups took ${ms.toFixed(0)} ms`);
  });
});
