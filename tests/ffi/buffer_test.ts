import assert from "node:assert/strict";
import {
  allocPages,
  getI64,
  getU64,
  MADV,
  madvise,
  PAGE_SIZE,
  setU64,
} from "../../ffi/mod.ts";
import { scratch } from "../../ffi/buffer.ts";

Deno.test("buffer: allocPages gives zeroed, page-aligned, writable memory", () => {
  const b = allocPages(5000);
  try {
    assert.equal(b.size, 2 * PAGE_SIZE);
    assert.equal(b.bytes.length, 2 * PAGE_SIZE);
    assert.equal(b.address % PAGE_SIZE, 0);
    assert.equal(BigInt(b.address), Deno.UnsafePointer.value(b.pointer));
    assert.ok(b.bytes.every((x) => x === 0));
    b.bytes[4097] = 0xab;
    // The pointer and the view are the same memory.
    const seen = new Deno.UnsafePointerView(b.pointer).getUint8(4097);
    assert.equal(seen, 0xab);
  } finally {
    b.free();
  }
});

Deno.test("buffer: free detaches views instead of leaving them dangling", () => {
  const b = allocPages(PAGE_SIZE);
  const view = b.bytes.subarray(100, 200);
  b.free();
  assert.ok(b.freed);
  assert.equal(b.bytes.length, 0);
  assert.equal(view.length, 0);
  assert.equal(view[0], undefined); // not a SIGSEGV
  b.free(); // idempotent
  assert.throws(() => allocPages(0), RangeError);
});

Deno.test("buffer: madvise DONTNEED zeroes anonymous pages", () => {
  const b = allocPages(PAGE_SIZE);
  try {
    b.bytes.fill(7);
    madvise(b.address, { len: PAGE_SIZE, advice: MADV.DONTNEED });
    assert.ok(b.bytes.every((x) => x === 0));
  } finally {
    b.free();
  }
});

Deno.test("buffer: scratch structs are 16-byte aligned, distinct and zeroed", () => {
  const a = scratch(40);
  const b = scratch(12);
  assert.equal(a.address % 16, 0);
  assert.equal(b.address % 16, 0);
  assert.ok(b.address >= a.address + 40 || a.address >= b.address + 12);
  assert.equal(a.bytes.length, 40);
  assert.equal(a.view.byteLength, 40);
  assert.equal(BigInt(a.address), Deno.UnsafePointer.value(a.pointer));
  assert.ok(a.bytes.every((x) => x === 0));
  assert.throws(() => scratch(PAGE_SIZE + 1), RangeError);
});

Deno.test("buffer: 64-bit fields are exact or rejected, never rounded", () => {
  const v = new DataView(new ArrayBuffer(16));
  for (const n of [0, 1, 2 ** 32 - 1, 2 ** 32, 0x7fff_ffff_f000, 2 ** 53 - 1]) {
    setU64(v, 0, n);
    assert.equal(v.getBigUint64(0, true), BigInt(n));
    assert.equal(getU64(v, 0), n);
  }
  assert.throws(() => setU64(v, 0, 2 ** 53), RangeError);
  assert.throws(() => setU64(v, 0, -1), RangeError);
  assert.throws(() => setU64(v, 0, 1.5), RangeError);
  v.setBigUint64(0, 2n ** 53n, true);
  assert.throws(() => getU64(v, 0), RangeError);
  v.setBigUint64(0, 0xffff_ffff_ffff_ffffn, true);
  assert.throws(
    () => getU64(v, 0),
    /18446744073709551615 is not a safe integer/,
  );
  for (const n of [-17, -1, 0, 8192, -(2 ** 53 - 1), 2 ** 53 - 1]) {
    v.setBigInt64(8, BigInt(n), true);
    assert.equal(getI64(v, 8), n);
  }
  v.setBigInt64(8, -(2n ** 53n), true);
  assert.throws(() => getI64(v, 8), RangeError);
});
