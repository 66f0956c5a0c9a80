import assert from "node:assert/strict";
import {
  assertRangeList,
  copyRanges,
  countPages,
  findRange,
  type LazyRange,
  mergeLists,
} from "../../src/lazy/mod.ts";
import { GiB, P, r } from "./_helpers.ts";

const LIST = [r(0x1000, 0x3000), r(0x3000, 0x4000, 0x9000), r(0x8000, 0xa000)];

Deno.test("findRange finds the range containing any byte", () => {
  assert.equal(findRange(LIST, 0), -1);
  assert.equal(findRange(LIST, 0xfff), -1);
  assert.equal(findRange(LIST, 0x1000), 0);
  assert.equal(findRange(LIST, 0x2fff), 0);
  assert.equal(findRange(LIST, 0x3000), 1);
  assert.equal(findRange(LIST, 0x3abc), 1);
  assert.equal(findRange(LIST, 0x4000), -1);
  assert.equal(findRange(LIST, 0x7fff), -1);
  assert.equal(findRange(LIST, 0x9fff), 2);
  assert.equal(findRange(LIST, 0xa000), -1);
  assert.equal(findRange([], 0x1000), -1);
});

Deno.test("findRange works near 2^47 and 2^52", () => {
  for (const base of [2 ** 47 - 8 * GiB, 2 ** 52]) {
    const list = [r(base, base + 5 * GiB), r(base + 6 * GiB, base + 7 * GiB)];
    assert.equal(findRange(list, base + 5 * GiB - 1), 0);
    assert.equal(findRange(list, base + 5 * GiB), -1);
    assert.equal(findRange(list, base + 6 * GiB + 123), 1);
    assert.equal(findRange(list, base - 1), -1);
  }
});

Deno.test("countPages counts beyond 2^32 bytes", () => {
  assert.equal(countPages([]), 0);
  assert.equal(countPages(LIST), 2 + 1 + 2);
  const base = 2 ** 52;
  assert.equal(
    countPages([
      r(base, base + 8 * GiB),
      r(base + 9 * GiB, base + 9 * GiB + P),
    ]),
    (8 * GiB) / P + 1,
  );
});

Deno.test("copyRanges makes an independent deep copy", () => {
  const copy = copyRanges(LIST);
  assert.deepStrictEqual(copy, LIST);
  assert.notEqual(copy, LIST);
  for (let i = 0; i < LIST.length; i++) assert.notEqual(copy[i], LIST[i]);
  copy.pop();
  assert.equal(LIST.length, 3);
});

Deno.test("mergeLists interleaves disjoint lists without joining ranges", () => {
  const a = [r(0x1000, 0x2000), r(0x5000, 0x6000)];
  const b = [r(0x2000, 0x3000, 0x7000), r(0x8000, 0x9000)];
  assert.deepStrictEqual(mergeLists(a, b), [a[0], b[0], a[1], b[1]]);
  assert.deepStrictEqual(mergeLists([], b), b);
  assert.deepStrictEqual(mergeLists(a, []), a);
  assert.equal(a.length, 2);
  assert.equal(b.length, 2);
});

Deno.test("mergeLists rejects overlapping lists", () => {
  assert.throws(
    () => mergeLists([r(0x1000, 0x3000)], [r(0x2000, 0x4000)]),
    RangeError,
  );
  assert.throws(
    () => mergeLists([r(0x1000, 0x2000)], [r(0x1000, 0x2000)]),
    RangeError,
  );
  // A large range hiding a small one of the other list.
  assert.throws(
    () => mergeLists([r(0, 8 * GiB)], [r(4 * GiB, 4 * GiB + P)]),
    RangeError,
  );
});

Deno.test("assertRangeList accepts valid lists and names violations", () => {
  assertRangeList([]);
  assertRangeList(LIST);
  const bad: [LazyRange[], RegExp][] = [
    [[r(0x1000, 0x1000)], /empty/],
    [[r(0x2000, 0x1000)], /empty/],
    [[r(0x1800, 0x2000)], /page-aligned/],
    [[r(0x1000, 0x2000, 0x10)], /image/],
    [[r(0x1000, 0x2000, -P)], /image/],
    [[r(0x2000, 0x3000), r(0x1000, 0x2000)], /range 1/],
    [[r(0x1000, 0x3000), r(0x2000, 0x4000)], /overlaps/],
    [[r(2 ** 53 - P, 2 ** 53)], /safe/],
  ];
  for (const [list, message] of bad) {
    assert.throws(
      () => assertRangeList(list),
      (e: unknown) => e instanceof RangeError && message.test(e.message),
      JSON.stringify(list),
    );
  }
});
