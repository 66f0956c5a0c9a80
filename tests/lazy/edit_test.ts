import assert from "node:assert/strict";
import {
  assertRangeList,
  carve,
  dropInterval,
  type LazyRange,
  moveInterval,
} from "../../src/lazy/mod.ts";
import { GiB, P, r } from "./_helpers.ts";

function sample(): LazyRange[] {
  return [r(0x1000, 0x5000), r(0x5000, 0x6000, 0x20000), r(0x8000, 0xc000)];
}

Deno.test("carve takes one page out of the middle of a range", () => {
  const list = [r(0x10000, 0x20000, 0x50000)];
  const removed = carve(list, { start: 0x13000, end: 0x14000 });
  assert.deepStrictEqual(removed, [r(0x13000, 0x14000, 0x53000)]);
  assert.deepStrictEqual(list, [
    r(0x10000, 0x13000, 0x50000),
    r(0x14000, 0x20000, 0x54000),
  ]);
});

Deno.test("carve trims range ends and removes whole ranges", () => {
  let list = sample();
  assert.deepStrictEqual(carve(list, { start: 0x1000, end: 0x2000 }), [
    r(0x1000, 0x2000),
  ]);
  assert.deepStrictEqual(list[0], r(0x2000, 0x5000));
  assert.deepStrictEqual(carve(list, { start: 0xb000, end: 0xc000 }), [
    r(0xb000, 0xc000),
  ]);
  assert.deepStrictEqual(list[2], r(0x8000, 0xb000));
  assert.deepStrictEqual(carve(list, { start: 0x5000, end: 0x6000 }), [
    r(0x5000, 0x6000, 0x20000),
  ]);
  assert.deepStrictEqual(list, [r(0x2000, 0x5000), r(0x8000, 0xb000)]);

  list = sample();
  assert.deepStrictEqual(carve(list, { start: 0, end: 0x10000 }), sample());
  assert.deepStrictEqual(list, []);
});

Deno.test("carve across several ranges and gaps returns sorted pieces", () => {
  const list = sample();
  const removed = carve(list, { start: 0x3000, end: 0x9000 });
  assert.deepStrictEqual(removed, [
    r(0x3000, 0x5000),
    r(0x5000, 0x6000, 0x20000),
    r(0x8000, 0x9000),
  ]);
  assert.deepStrictEqual(list, [r(0x1000, 0x3000), r(0x9000, 0xc000)]);
  assertRangeList(list);
});

Deno.test("carve of uncovered or empty intervals is a no-op", () => {
  const list = sample();
  assert.deepStrictEqual(carve(list, { start: 0x6000, end: 0x8000 }), []);
  assert.deepStrictEqual(carve(list, { start: 0x20000, end: 0x30000 }), []);
  assert.deepStrictEqual(carve(list, { start: 0, end: 0x1000 }), []);
  assert.deepStrictEqual(carve(list, { start: 0x2000, end: 0x2000 }), []);
  assert.deepStrictEqual(carve([], { start: 0x2000, end: 0x3000 }), []);
  assert.deepStrictEqual(list, sample());
});

Deno.test("carve does not modify range objects shared with other lists", () => {
  const list = sample();
  const other = list.slice();
  const objects = other.map((x) => ({ ...x }));
  carve(list, { start: 0x2000, end: 0x3000 });
  carve(list, { start: 0x8000, end: 0x9000 });
  assert.deepStrictEqual(other, objects);
});

Deno.test("carve rejects unaligned, unsafe or reversed intervals", () => {
  const list = sample();
  assert.throws(() => carve(list, { start: 0x1001, end: 0x2000 }), RangeError);
  assert.throws(() => carve(list, { start: 0x1000, end: 0x2001 }), RangeError);
  assert.throws(() => carve(list, { start: 0x3000, end: 0x2000 }), RangeError);
  assert.throws(() => carve(list, { start: -P, end: 0x2000 }), RangeError);
  assert.throws(() => carve(list, { start: 0, end: 2 ** 53 }), RangeError);
  assert.throws(() => carve(list, { start: NaN, end: 0x2000 }), RangeError);
  assert.deepStrictEqual(list, sample());
});

Deno.test("carve works on a large list with one search and one splice", () => {
  // 50,000 ranges of 4 pages with 1-page gaps; a cheap regression guard that
  // the hot path does no per-range work.
  const list: LazyRange[] = [];
  for (let i = 0; i < 50_000; i++) {
    const start = 2 ** 46 + i * 5 * P;
    list.push(r(start, start + 4 * P));
  }
  for (let i = 0; i < 50_000; i += 7) {
    const page = 2 ** 46 + i * 5 * P + 2 * P;
    assert.deepStrictEqual(carve(list, { start: page, end: page + P }), [
      r(page, page + P),
    ]);
  }
  assert.equal(list.length, 50_000 + Math.ceil(50_000 / 7));
  assertRangeList(list);
});

Deno.test("dropInterval handles lengths of 4 GiB and more exactly", () => {
  for (const base of [0x7f0000000000, 2 ** 47 - 64 * GiB, 2 ** 52]) {
    const list = [
      r(base, base + 10 * GiB, base + GiB),
      r(base + 11 * GiB, base + 20 * GiB),
    ];
    // Lengths chosen so that their low 32 bits are 0 or tiny: a truncating
    // implementation would drop nothing or almost nothing.
    const out = dropInterval(list, {
      start: base + 2 * GiB,
      end: base + 2 * GiB + 4 * GiB,
    });
    assert.deepStrictEqual(out, [
      r(base, base + 2 * GiB, base + GiB),
      r(base + 6 * GiB, base + 10 * GiB, base + 7 * GiB),
      r(base + 11 * GiB, base + 20 * GiB),
    ]);
    const out2 = dropInterval(list, {
      start: base + P,
      end: base + 16 * GiB + P,
    });
    assert.deepStrictEqual(out2, [
      r(base, base + P, base + GiB),
      r(base + 16 * GiB + P, base + 20 * GiB, base + 16 * GiB + P),
    ]);
    assert.deepStrictEqual(
      dropInterval(list, { start: base, end: base + 20 * GiB }),
      [],
    );
    assert.equal(list.length, 2, "input untouched");
  }
});

Deno.test("moveInterval shifts a whole range and keeps its image", () => {
  const list = sample();
  const out = moveInterval(list, { from: 0x8000, to: 0x40000, len: 0x4000 });
  assert.deepStrictEqual(out, [
    r(0x1000, 0x5000),
    r(0x5000, 0x6000, 0x20000),
    r(0x40000, 0x44000, 0x8000),
  ]);
  assert.deepStrictEqual(list, sample(), "input untouched");
});

Deno.test("moveInterval splits at the source boundaries and keeps the list sorted", () => {
  const list = sample();
  const out = moveInterval(list, { from: 0x3000, to: 0x100000, len: 0x6000 });
  assert.deepStrictEqual(out, [
    r(0x1000, 0x3000),
    r(0x9000, 0xc000),
    r(0x100000, 0x102000, 0x3000),
    r(0x102000, 0x103000, 0x20000),
    r(0x105000, 0x106000, 0x8000),
  ]);
  assertRangeList(out);
  const down = moveInterval([r(0x50000, 0x58000)], {
    from: 0x52000,
    to: 0x1000,
    len: 0x2000,
  });
  assert.deepStrictEqual(down, [
    r(0x1000, 0x3000, 0x52000),
    r(0x50000, 0x52000),
    r(0x54000, 0x58000),
  ]);
});

Deno.test("moveInterval drops stale ranges in the destination", () => {
  const list = [r(0x1000, 0x3000), r(0x10000, 0x20000, 0x90000)];
  const out = moveInterval(list, { from: 0x1000, to: 0x12000, len: 0x4000 });
  assert.deepStrictEqual(out, [
    r(0x10000, 0x12000, 0x90000),
    r(0x12000, 0x14000, 0x1000),
    r(0x16000, 0x20000, 0x96000),
  ]);
});

Deno.test("moveInterval with overlapping source and destination", () => {
  // The kernel refuses this, but the result must still be a valid list.
  const list = [r(0x1000, 0x5000)];
  const out = moveInterval(list, { from: 0x1000, to: 0x3000, len: 0x4000 });
  assert.deepStrictEqual(out, [r(0x3000, 0x7000, 0x1000)]);
  assertRangeList(out);
});

Deno.test("moveInterval of nothing, or onto itself, copies the list", () => {
  const list = sample();
  assert.deepStrictEqual(
    moveInterval(list, { from: 0x1000, to: 0x9000, len: 0 }),
    list,
  );
  assert.deepStrictEqual(
    moveInterval(list, { from: 0x1000, to: 0x1000, len: 0x4000 }),
    list,
  );
  assert.notEqual(moveInterval(list, { from: 0, to: 0, len: 0 }), list);
});

Deno.test("moveInterval moves 4 GiB and more between high addresses", () => {
  const from = 2 ** 47 - 64 * GiB;
  const to = 2 ** 52 + 8 * GiB;
  const list = [r(from - GiB, from + 12 * GiB, 0x7f0000000000)];
  const out = moveInterval(list, { from, to, len: 8 * GiB });
  assert.deepStrictEqual(out, [
    r(from - GiB, from, 0x7f0000000000),
    r(from + 8 * GiB, from + 12 * GiB, 0x7f0000000000 + 9 * GiB),
    r(to, to + 8 * GiB, 0x7f0000000000 + GiB),
  ]);
  const back = moveInterval(out, { from: to, to: from, len: 8 * GiB });
  assert.deepStrictEqual(back, [
    r(from - GiB, from, 0x7f0000000000),
    r(from, from + 8 * GiB, 0x7f0000000000 + GiB),
    r(from + 8 * GiB, from + 12 * GiB, 0x7f0000000000 + 9 * GiB),
  ]);
});

Deno.test("moveInterval rejects bad arguments", () => {
  const list = sample();
  assert.throws(
    () => moveInterval(list, { from: 0x1001, to: 0, len: P }),
    RangeError,
  );
  assert.throws(
    () => moveInterval(list, { from: 0, to: 0x10, len: P }),
    RangeError,
  );
  assert.throws(
    () => moveInterval(list, { from: 0, to: P, len: 100 }),
    RangeError,
  );
  assert.throws(
    () => moveInterval(list, { from: 0, to: P, len: -P }),
    RangeError,
  );
  assert.throws(
    () => moveInterval(list, { from: 0, to: 2 ** 53 - P, len: 2 * P }),
    RangeError,
  );
});
