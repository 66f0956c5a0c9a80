import assert from "node:assert/strict";
import { faultWindow, nextChunk } from "../../src/lazy/mod.ts";
import { GiB, P, r } from "./_helpers.ts";

const LIST = [r(0x10000, 0x20000, 0x70000), r(0x30000, 0x31000)];
const ONE_PAGE = { before: 0, after: P };

Deno.test("faultWindow with one page is CRIU's fault transfer", () => {
  assert.deepStrictEqual(
    faultWindow(LIST, 0x12345, ONE_PAGE),
    r(0x12000, 0x13000, 0x72000),
  );
  assert.deepStrictEqual(
    faultWindow(LIST, 0x30fff, ONE_PAGE),
    r(0x30000, 0x31000),
  );
});

Deno.test("faultWindow returns undefined outside lazy ranges", () => {
  for (const addr of [0, 0xffff, 0x20000, 0x2ffff, 0x31000, 2 ** 52]) {
    assert.equal(faultWindow(LIST, addr, ONE_PAGE), undefined);
  }
  assert.equal(faultWindow([], 0x1000, ONE_PAGE), undefined);
});

Deno.test("faultWindow clips the window to the range", () => {
  const opts = { before: 4 * P, after: 8 * P };
  assert.deepStrictEqual(
    faultWindow(LIST, 0x18010, opts),
    r(0x14000, 0x20000, 0x74000),
  );
  assert.deepStrictEqual(
    faultWindow(LIST, 0x11000, opts),
    r(0x10000, 0x19000, 0x70000),
  );
  assert.deepStrictEqual(faultWindow(LIST, 0x30000, opts), r(0x30000, 0x31000));
  // before larger than the address itself
  assert.deepStrictEqual(
    faultWindow([r(0, 0x3000)], 0x1000, { before: 16 * P, after: P }),
    r(0, 0x2000),
  );
});

Deno.test("faultWindow works near 2^47 and 2^52", () => {
  for (const base of [2 ** 47 - 16 * GiB, 2 ** 52]) {
    const list = [r(base, base + 8 * GiB, base - 4 * GiB)];
    const addr = base + 5 * GiB + 17;
    assert.deepStrictEqual(
      faultWindow(list, addr, { before: 2 * P, after: 4 * P }),
      r(base + 5 * GiB - 2 * P, base + 5 * GiB + 4 * P, base + GiB - 2 * P),
    );
  }
});

Deno.test("faultWindow rejects bad arguments", () => {
  assert.throws(() => faultWindow(LIST, -1, ONE_PAGE), RangeError);
  assert.throws(() => faultWindow(LIST, 1.5, ONE_PAGE), RangeError);
  assert.throws(() => faultWindow(LIST, 2 ** 53, ONE_PAGE), RangeError);
  assert.throws(
    () => faultWindow(LIST, 0x10000, { before: 1, after: P }),
    RangeError,
  );
  assert.throws(
    () => faultWindow(LIST, 0x10000, { before: 0, after: 0 }),
    RangeError,
  );
});

Deno.test("nextChunk starts at the lowest range by default", () => {
  assert.deepStrictEqual(
    nextChunk(LIST, { maxBytes: 16 * P }),
    r(0x10000, 0x20000, 0x70000),
  );
  assert.deepStrictEqual(
    nextChunk(LIST, { maxBytes: 64 * 1024 * 1024 }),
    r(0x10000, 0x20000, 0x70000),
  );
  assert.deepStrictEqual(
    nextChunk(LIST, { maxBytes: 3 * P }),
    r(0x10000, 0x13000, 0x70000),
  );
  assert.equal(nextChunk([], { maxBytes: P }), undefined);
});

Deno.test("nextChunk continues after a cursor and wraps around", () => {
  assert.deepStrictEqual(
    nextChunk(LIST, { maxBytes: 2 * P, after: 0x1c000 }),
    r(0x1c000, 0x1e000, 0x7c000),
  );
  assert.deepStrictEqual(
    nextChunk(LIST, { maxBytes: 16 * P, after: 0x20000 }),
    r(0x30000, 0x31000),
  );
  assert.deepStrictEqual(
    nextChunk(LIST, { maxBytes: 16 * P, after: 0x30000 }),
    r(0x30000, 0x31000),
  );
  assert.deepStrictEqual(
    nextChunk(LIST, { maxBytes: 2 * P, after: 0x31000 }),
    r(0x10000, 0x12000, 0x70000),
  );
});

Deno.test("nextChunk clips chunks in 4 GiB-plus ranges at high addresses", () => {
  const base = 2 ** 52;
  const list = [r(base, base + 6 * GiB, 2 ** 47 - 8 * GiB)];
  const max = 4 * 1024 * 1024;
  assert.deepStrictEqual(
    nextChunk(list, { maxBytes: max, after: base + 5 * GiB }),
    r(base + 5 * GiB, base + 5 * GiB + max, 2 ** 47 - 3 * GiB),
  );
  assert.deepStrictEqual(
    nextChunk(list, { maxBytes: 8 * GiB, after: base + GiB }),
    r(base + GiB, base + 6 * GiB, 2 ** 47 - 7 * GiB),
  );
});

Deno.test("nextChunk rejects bad arguments", () => {
  assert.throws(() => nextChunk(LIST, { maxBytes: 0 }), RangeError);
  assert.throws(() => nextChunk(LIST, { maxBytes: 100 }), RangeError);
  assert.throws(() => nextChunk(LIST, { maxBytes: P, after: 1 }), RangeError);
  assert.throws(() => nextChunk([], { maxBytes: 0 }), RangeError);
});
