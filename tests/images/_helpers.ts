// Shared helpers of the image-layer tests: scratch directories, ImageError
// assertions, and reading located page data back.
import assert from "node:assert/strict";
import {
  ImageError,
  PAGE_SIZE,
  type PageSegment,
  readStamp,
} from "../../src/images/mod.ts";

/** A fresh scratch directory, removed when `fn` settles. */
export async function withTempDir<T>(
  fn: (dir: string) => T | Promise<T>,
): Promise<T> {
  const dir = Deno.makeTempDirSync({ prefix: "lazyd-images-" });
  try {
    return await fn(dir);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
}

/** What an expected ImageError must say. */
export interface Expected {
  file?: string;
  offset?: number;
  reason?: RegExp;
}

/** Asserts that `fn` throws an ImageError matching `expected`; returns it. */
export function assertImageError(
  fn: () => unknown,
  expected: Expected = {},
): ImageError {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  assert.ok(
    caught instanceof ImageError,
    `expected an ImageError, got ${caught}`,
  );
  const err = caught;
  if (expected.file !== undefined) assert.equal(err.file, expected.file);
  if (expected.offset !== undefined) assert.equal(err.offset, expected.offset);
  if (expected.reason) assert.match(err.reason, expected.reason);
  assert.equal(err.message, `${err.file}: byte ${err.offset}: ${err.reason}`);
  return err;
}

/** Reads the bytes a located segment stands for (zeros for a zero segment). */
export function readSegment(seg: PageSegment): Uint8Array {
  const buf = new Uint8Array(seg.pages * PAGE_SIZE);
  if (seg.zero) return buf;
  const f = Deno.openSync(seg.file);
  try {
    f.seekSync(seg.offset, Deno.SeekMode.Start);
    for (let pos = 0; pos < buf.length;) {
      const n = f.readSync(buf.subarray(pos));
      assert.ok(n !== null, `${seg.file} ends at ${seg.offset + pos}`);
      pos += n;
    }
  } finally {
    f.close();
  }
  return buf;
}

/** The stamps of every page of `data` (see `stampPage`). */
export function stamps(data: Uint8Array): { addr: number; tag: number }[] {
  const out = [];
  for (let pos = 0; pos < data.length; pos += PAGE_SIZE) {
    out.push(readStamp(data.subarray(pos, pos + PAGE_SIZE)));
  }
  return out;
}

/** Hex bytes "19 43 56 54 ..." to a Uint8Array (for the spec's examples). */
export function bytes(hex: string): Uint8Array {
  return new Uint8Array(hex.trim().split(/\s+/).map((b) => parseInt(b, 16)));
}
