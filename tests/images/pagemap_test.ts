import assert from "node:assert/strict";
import { create } from "@bufbuild/protobuf";
import {
  PagemapEntrySchema,
  PagemapHeadSchema,
} from "../../proto/gen/pagemap_pb.ts";
import {
  encodeImage,
  entryIndexAt,
  PAGE_SIZE,
  pagemapRecords,
  parsePagemap,
  PE_LAZY,
  PE_PARENT,
  PE_PRESENT,
  type SyntheticEntry,
} from "../../src/images/mod.ts";
import { assertImageError, bytes } from "./_helpers.ts";

const file = "/x/pagemap-1.img";
const opts = { file, imgVersion: 2 };
const parse = (entries: SyntheticEntry[]) =>
  parsePagemap(
    encodeImage("pagemap", pagemapRecords(entries, { pagesId: 3 })),
    opts,
  );
const GiB = 1024 ** 3;

Deno.test("pagemap: the spec's example", () => {
  const pm = parsePagemap(
    bytes(`19 43 56 54 25 40 08 56 02 00 00 00 08 01
      0c 00 00 00 08 80 a0 80 80 80 e0 1f 10 03 20 04`),
    opts,
  );
  assert.deepEqual(pm, {
    file,
    pagesId: 1,
    entries: [{
      vaddr: 0x7f0000001000,
      nrPages: 3,
      flags: PE_PRESENT,
      dataOffset: 0,
      recordOffset: 14,
    }],
    presentBytes: 3 * PAGE_SIZE,
  });
});

Deno.test("pagemap: data offsets count only PE_PRESENT entries", () => {
  const pm = parse([
    { vaddr: 0x1000, nrPages: 2, flags: PE_PRESENT },
    { vaddr: 0x3000, nrPages: 1, flags: PE_PARENT },
    { vaddr: 0x4000, nrPages: 4, flags: PE_LAZY },
    { vaddr: 0x10000, nrPages: 3, flags: PE_LAZY | PE_PRESENT },
    { vaddr: 0x20000, nrPages: 1, flags: PE_LAZY | PE_PARENT },
    { vaddr: 0x21000, nrPages: 1, flags: PE_PRESENT },
  ]);
  assert.equal(pm.pagesId, 3);
  assert.deepEqual(pm.entries.map((e) => e.dataOffset), [
    0,
    -1,
    -1,
    2 * PAGE_SIZE,
    -1,
    5 * PAGE_SIZE,
  ]);
  assert.equal(pm.presentBytes, 6 * PAGE_SIZE);
  // head: 8 + 4 + 2; each entry record is 4 + its message
  assert.equal(pm.entries[0].recordOffset, 14);
  assert.ok(
    pm.entries.every((e, i) =>
      i === 0 || e.recordOffset > pm.entries[i - 1].recordOffset
    ),
  );
});

Deno.test("pagemap: compatibility flags for pre-flags images (§8.2)", () => {
  const pm = parse([
    { vaddr: 0x1000, nrPages: 1 }, // no flags field: present
    { vaddr: 0x2000, nrPages: 1, inParent: true }, // in_parent: parent
    { vaddr: 0x3000, nrPages: 1, inParent: true, flags: PE_LAZY }, // both: flags | parent
    { vaddr: 0x4000, nrPages: 1, inParent: false }, // in_parent false, no flags: present
    { vaddr: 0x5000, nrPages: 1, inParent: false, flags: PE_LAZY }, // flags as stored
    { vaddr: 0x6000, nrPages: 1, flags: 0 }, // flags present but 0: kept
  ]);
  assert.deepEqual(pm.entries.map((e) => e.flags), [
    PE_PRESENT,
    PE_PARENT,
    PE_LAZY | PE_PARENT,
    PE_PRESENT,
    PE_LAZY,
    0,
  ]);
  assert.deepEqual(pm.entries.map((e) => e.dataOffset), [
    0,
    -1,
    -1,
    PAGE_SIZE,
    -1,
    -1,
  ]);
});

Deno.test("pagemap: CRIU 4.2's nr_pages in field 5 wins over field 2", () => {
  const pm = parse([
    { vaddr: 0x1000, nrPages: 7, flags: PE_PRESENT, nrPages64: true },
    { vaddr: 0x100000, nrPages: 2, flags: PE_PRESENT },
  ]);
  assert.deepEqual(pm.entries.map((e) => e.nrPages), [7, 2]);
  // Field 5 set even though field 2 disagrees: field 5 counts.
  const e = create(PagemapEntrySchema, {
    vaddr: 0x1000n,
    nrPages: 1,
    nrPages64: 5n,
    flags: PE_PRESENT,
  });
  const img = encodeImage("pagemap", [
    create(PagemapHeadSchema, { pagesId: 1 }),
    e,
  ]);
  assert.equal(parsePagemap(img, opts).entries[0].nrPages, 5);
});

Deno.test("pagemap: addresses above 4 GiB and runs longer than 4 GiB", () => {
  const pm = parse([
    { vaddr: 0x100000000, nrPages: 1, flags: PE_PRESENT },
    {
      vaddr: 0x7f0000000000,
      nrPages: (8 * GiB) / PAGE_SIZE,
      flags: PE_LAZY | PE_PRESENT,
      nrPages64: true,
    },
    { vaddr: 0x7f0200000000, nrPages: 0xffffffff, flags: PE_PRESENT },
  ]);
  assert.deepEqual(pm.entries.map((e) => e.dataOffset), [
    0,
    PAGE_SIZE,
    PAGE_SIZE + 8 * GiB,
  ]);
  assert.equal(pm.presentBytes, PAGE_SIZE + 8 * GiB + 0xffffffff * PAGE_SIZE);
});

Deno.test("pagemap: values from 2^53 on are errors naming the record", () => {
  const head = create(PagemapHeadSchema, { pagesId: 1 });
  const ok = create(PagemapEntrySchema, { vaddr: 0x1000n, nrPages: 1 });
  const cases: [Record<string, unknown>, RegExp][] = [
    [
      { vaddr: 2n ** 53n, nrPages: 1 },
      /vaddr 0x20000000000000 is not below 2\^53/,
    ],
    [
      { vaddr: 2n ** 64n - 4096n, nrPages: 1 },
      /vaddr 0xfffffffffffff000 is not below 2\^53/,
    ],
    [
      { vaddr: 0x2000n, nrPages: 0, nrPages64: 2n ** 53n },
      /nr_pages 0x20000000000000 is not below 2\^53/,
    ],
    [
      { vaddr: 0x2000n, nrPages: 0, nrPages64: 2n ** 41n },
      /with 2199023255552 pages ends beyond 2\^53/,
    ],
    [{ vaddr: 2n ** 53n - 4096n, nrPages: 2 }, /ends beyond 2\^53/],
  ];
  for (const [init, reason] of cases) {
    const img = encodeImage("pagemap", [
      head,
      ok,
      create(PagemapEntrySchema, init),
    ]);
    // head record at 8 (4 + 2 bytes), first entry at 14 (4 + 5 bytes), the bad one at 23
    assertImageError(() => parsePagemap(img, opts), {
      file,
      offset: 23,
      reason,
    });
  }
});

Deno.test("pagemap: entries must be aligned, non-empty, sorted, non-overlapping", () => {
  const cases: [SyntheticEntry[], RegExp][] = [
    [
      [{ vaddr: 0x1800, nrPages: 1, flags: PE_PRESENT }],
      /vaddr 0x1800 is not page aligned/,
    ],
    [
      [{ vaddr: 0x1000, nrPages: 0, flags: PE_PRESENT }],
      /entry at 0x1000 has no pages/,
    ],
    [
      [{ vaddr: 0x1000, nrPages: 0, flags: PE_PRESENT, nrPages64: true }],
      /has no pages/,
    ],
    [
      [{ vaddr: 0x1000, nrPages: 2, flags: PE_PRESENT }, {
        vaddr: 0x2000,
        nrPages: 1,
        flags: PE_PRESENT,
      }],
      /entry at 0x2000 overlaps or precedes the previous one ending at 0x3000/,
    ],
    [
      [{ vaddr: 0x5000, nrPages: 1, flags: PE_PRESENT }, {
        vaddr: 0x1000,
        nrPages: 1,
        flags: PE_PRESENT,
      }],
      /overlaps or precedes/,
    ],
  ];
  for (const [entries, reason] of cases) {
    const err = assertImageError(() => parse(entries), { file, reason });
    assert.ok(err.offset >= 14, `offset ${err.offset} names an entry record`);
  }
  // Adjacent entries are fine.
  assert.equal(
    parse([{ vaddr: 0x1000, nrPages: 1, flags: PE_PRESENT }, {
      vaddr: 0x2000,
      nrPages: 1,
      flags: PE_LAZY,
    }]).entries
      .length,
    2,
  );
});

Deno.test("pagemap: a head is required; entries are optional", () => {
  assertImageError(() => parsePagemap(encodeImage("pagemap", []), opts), {
    offset: 8,
    reason: /no pagemap head record/,
  });
  assert.deepEqual(parse([]).entries, []);
});

Deno.test("entryIndexAt: binary search for the entry at or after an address", () => {
  const { entries } = parse([
    { vaddr: 0x1000, nrPages: 2, flags: PE_PRESENT },
    { vaddr: 0x5000, nrPages: 1, flags: PE_PRESENT },
    { vaddr: 0x100000000, nrPages: 1, flags: PE_PRESENT },
  ]);
  const at = (a: number) => entryIndexAt(entries, a);
  assert.deepEqual(
    [0, 0x1000, 0x2fff, 0x3000, 0x5000, 0x6000, 0x100000000, 0x100001000].map(
      at,
    ),
    [0, 0, 0, 1, 1, 2, 2, 3],
  );
  assert.equal(entryIndexAt([], 0x1000), 0);
});
