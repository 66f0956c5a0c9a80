import assert from "node:assert/strict";
import { collectLazyRanges } from "../../src/lazy/mod.ts";
import { GiB, P } from "./_helpers.ts";

const PE_PARENT = 1;
const PE_LAZY = 2;
const PE_PRESENT = 4;

function entry(vaddr: number, nrPages: number, flags: number) {
  return { vaddr, nrPages, flags };
}

Deno.test("collectLazyRanges takes PE_LAZY entries, with or without PE_PARENT", () => {
  const vma = { start: 0x10000, end: 0x20000 };
  const got = collectLazyRanges([
    entry(0x10000, 1, PE_PRESENT),
    entry(0x11000, 2, PE_PARENT),
    entry(0x13000, 2, PE_LAZY | PE_PRESENT),
    entry(0x15000, 1, PE_LAZY),
    entry(0x16000, 3, PE_LAZY | PE_PARENT),
    entry(0x19000, 1, PE_PARENT | PE_PRESENT),
  ], [vma]);
  assert.deepStrictEqual(got.ranges, [
    { start: 0x13000, end: 0x15000, image: 0x13000 },
    { start: 0x15000, end: 0x16000, image: 0x15000 },
    { start: 0x16000, end: 0x19000, image: 0x16000 },
  ]);
  assert.equal(got.pages, 6);
  assert.deepStrictEqual(got.outside, []);
});

Deno.test("collectLazyRanges ignores images without lazy entries", () => {
  const got = collectLazyRanges([
    entry(0x1000, 4, PE_PRESENT),
    entry(0x5000, 4, PE_PARENT),
  ], [{ start: 0x1000, end: 0x9000 }]);
  assert.deepStrictEqual(got, { ranges: [], pages: 0, outside: [] });
  assert.deepStrictEqual(collectLazyRanges([], []), {
    ranges: [],
    pages: 0,
    outside: [],
  });
});

Deno.test("collectLazyRanges splits entries at VMA boundaries, adjacent VMAs included", () => {
  const vmas = [
    { start: 0x10000, end: 0x14000 },
    { start: 0x14000, end: 0x18000 }, // adjacent to the first
    { start: 0x20000, end: 0x30000 },
  ];
  const got = collectLazyRanges([
    entry(0x12000, 8, PE_LAZY | PE_PRESENT), // 0x12000..0x1a000 over two VMAs and a gap
    entry(0x1e000, 4, PE_LAZY), // 0x1e000..0x22000: gap, then third VMA
    entry(0x24000, 1, PE_PRESENT),
    entry(0x25000, 2, PE_LAZY),
    entry(0x2f000, 3, PE_LAZY), // runs past the last VMA
  ], vmas);
  assert.deepStrictEqual(got.ranges, [
    { start: 0x12000, end: 0x14000, image: 0x12000 },
    { start: 0x14000, end: 0x18000, image: 0x14000 },
    { start: 0x20000, end: 0x22000, image: 0x20000 },
    { start: 0x25000, end: 0x27000, image: 0x25000 },
    { start: 0x2f000, end: 0x30000, image: 0x2f000 },
  ]);
  assert.deepStrictEqual(got.outside, [
    { start: 0x18000, end: 0x1a000 },
    { start: 0x1e000, end: 0x20000 },
    { start: 0x30000, end: 0x32000 },
  ]);
  assert.equal(got.pages, 8 + 4 + 2 + 3);
});

Deno.test("collectLazyRanges does not join contiguous entries", () => {
  const got = collectLazyRanges([
    entry(0x1000, 1, PE_LAZY),
    entry(0x2000, 1, PE_LAZY),
  ], [{ start: 0x1000, end: 0x3000 }]);
  assert.equal(got.ranges.length, 2);
});

Deno.test("collectLazyRanges reports entries before, between and after all VMAs", () => {
  const got = collectLazyRanges([
    entry(0x1000, 1, PE_LAZY),
    entry(0x5000, 1, PE_LAZY),
    entry(0x9000, 1, PE_LAZY),
  ], [{ start: 0x3000, end: 0x4000 }, { start: 0x6000, end: 0x7000 }]);
  assert.deepStrictEqual(got.ranges, []);
  assert.deepStrictEqual(got.outside, [
    { start: 0x1000, end: 0x2000 },
    { start: 0x5000, end: 0x6000 },
    { start: 0x9000, end: 0xa000 },
  ]);
  assert.equal(got.pages, 3);
});

Deno.test("collectLazyRanges handles ranges of 4 GiB and more at high addresses", () => {
  for (const base of [2 ** 47 - 64 * GiB, 2 ** 52]) {
    const vmas = [
      { start: base, end: base + 5 * GiB },
      { start: base + 5 * GiB, end: base + 12 * GiB + P },
    ];
    const nr = (12 * GiB) / P + 1;
    const got = collectLazyRanges([entry(base, nr, PE_LAZY)], vmas);
    assert.deepStrictEqual(got.ranges, [
      { start: base, end: base + 5 * GiB, image: base },
      {
        start: base + 5 * GiB,
        end: base + 12 * GiB + P,
        image: base + 5 * GiB,
      },
    ]);
    assert.equal(got.pages, nr);
  }
});

Deno.test("collectLazyRanges rejects malformed input with RangeError", () => {
  const vma = [{ start: 0x1000, end: 0x10000 }];
  const bad: [string, () => unknown, RegExp][] = [
    [
      "unsorted entries",
      () => collectLazyRanges([entry(0x5000, 1, 2), entry(0x1000, 1, 2)], vma),
      /sorted/,
    ],
    [
      "overlapping entries",
      () => collectLazyRanges([entry(0x1000, 4, 2), entry(0x3000, 1, 4)], vma),
      /overlaps/,
    ],
    [
      "unaligned entry",
      () => collectLazyRanges([entry(0x1001, 1, 2)], vma),
      /page-aligned/,
    ],
    [
      "negative pages",
      () => collectLazyRanges([entry(0x1000, -1, 2)], vma),
      /nr_pages/,
    ],
    [
      "fractional pages",
      () => collectLazyRanges([entry(0x1000, 1.5, 2)], vma),
      /nr_pages/,
    ],
    [
      "bad flags",
      () => collectLazyRanges([entry(0x1000, 1, -2)], vma),
      /flags/,
    ],
    [
      "unsafe end",
      () => collectLazyRanges([entry(2 ** 53 - P, 2, 2)], []),
      /safe integer/,
    ],
    [
      "unsorted VMAs",
      () =>
        collectLazyRanges([], [{ start: 0x5000, end: 0x6000 }, {
          start: 0x1000,
          end: 0x2000,
        }]),
      /VMA 1/,
    ],
    [
      "overlapping VMAs",
      () =>
        collectLazyRanges([], [{ start: 0x1000, end: 0x3000 }, {
          start: 0x2000,
          end: 0x4000,
        }]),
      /overlaps/,
    ],
    [
      "empty VMA",
      () => collectLazyRanges([], [{ start: 0x1000, end: 0x1000 }]),
      /empty/,
    ],
    [
      "unaligned VMA",
      () => collectLazyRanges([], [{ start: 0x1000, end: 0x1800 }]),
      /page-aligned/,
    ],
  ];
  for (const [name, fn, message] of bad) {
    assert.throws(
      fn,
      (e: unknown) => e instanceof RangeError && message.test(e.message),
      name,
    );
  }
});

Deno.test("collectLazyRanges accepts non-lazy and empty entries between lazy ones", () => {
  const got = collectLazyRanges([
    entry(0x1000, 0, PE_LAZY),
    entry(0x1000, 1, PE_LAZY),
    entry(0x2000, 0, PE_PRESENT),
  ], [{ start: 0, end: 0x4000 }]);
  assert.deepStrictEqual(got.ranges, [{
    start: 0x1000,
    end: 0x2000,
    image: 0x1000,
  }]);
  assert.equal(got.pages, 1);
});
