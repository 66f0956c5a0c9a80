/**
 * uffd_msg decoding. Synthetic messages go through a socketpair (any fd
 * works for readMessages: it is one read(2)); real kernel messages are
 * covered by uffd_fault_test.ts.
 */
import assert from "node:assert/strict";
import {
  decodeMessage,
  readMessages,
  socketpair,
  UFFD_EVENT,
  UFFD_MSG_SIZE,
  writeFd,
} from "../../ffi/mod.ts";
import { closeAll } from "./helpers.ts";

function msg(
  event: number,
  fields: Record<number, bigint | number>,
): Uint8Array {
  const b = new Uint8Array(UFFD_MSG_SIZE);
  const v = new DataView(b.buffer);
  v.setUint8(0, event);
  for (const [off, val] of Object.entries(fields)) {
    if (typeof val === "bigint") v.setBigUint64(Number(off), val, true);
    else v.setUint32(Number(off), val, true);
  }
  return b;
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

const HIGH = 0x7fff_ffff_f000n; // near the top of the 47-bit user space

Deno.test("uffd_msg: every event kind decodes, in one read", () => {
  const [a, b] = socketpair({ nonblocking: true });
  try {
    const all = concat(
      msg(UFFD_EVENT.PAGEFAULT, { 8: 1n, 16: HIGH + 0x123n, 24: 0 }),
      msg(UFFD_EVENT.FORK, { 8: 17 }),
      msg(UFFD_EVENT.REMAP, { 8: 0x1000n, 16: HIGH, 24: 0x3000n }),
      msg(UFFD_EVENT.REMOVE, { 8: 0x10000n, 16: 0x12000n }),
      msg(UFFD_EVENT.UNMAP, { 8: 0x20000n, 16: 2n ** 53n - 1n }),
      msg(0x42, { 8: 0xffff_ffff_ffff_ffffn }),
    );
    assert.equal(writeFd(a, all), all.length);
    assert.deepEqual(readMessages(b), [
      { kind: "pagefault", flags: 1, address: Number(HIGH) + 0x123 },
      { kind: "fork", ufd: 17 },
      { kind: "remap", from: 0x1000, to: Number(HIGH), len: 0x3000 },
      { kind: "remove", start: 0x10000, end: 0x12000 },
      { kind: "unmap", start: 0x20000, end: Number.MAX_SAFE_INTEGER },
      { kind: "unknown", event: 0x42 },
    ]);
    assert.deepEqual(readMessages(b), []);
  } finally {
    closeAll(a, b);
  }
});

Deno.test("uffd_msg: max bounds how many messages one read takes", () => {
  const [a, b] = socketpair({ nonblocking: true });
  try {
    const one = (addr: bigint) => msg(UFFD_EVENT.PAGEFAULT, { 16: addr });
    writeFd(a, concat(one(0x1000n), one(0x2000n), one(0x3000n)));
    assert.deepEqual(
      readMessages(b, { max: 2 }).map((e) =>
        e.kind === "pagefault" && e.address
      ),
      [0x1000, 0x2000],
    );
    assert.equal(readMessages(b, { max: 2 }).length, 1);
    assert.deepEqual(readMessages(b, { max: 2 }), []);
    assert.throws(() => readMessages(b, { max: 0 }), RangeError);
    assert.throws(() => readMessages(b, { max: 65 }), RangeError);
  } finally {
    closeAll(a, b);
  }
});

Deno.test("uffd_msg: unsafe 64-bit fields throw instead of rounding", () => {
  const v = new DataView(
    msg(UFFD_EVENT.PAGEFAULT, { 16: 2n ** 53n + 1n }).buffer,
  );
  assert.throws(
    () => decodeMessage(v, 0),
    /pagefault\.address.*not a safe integer/,
  );
  const w = new DataView(msg(UFFD_EVENT.REMAP, { 24: 2n ** 60n }).buffer);
  assert.throws(() => decodeMessage(w, 0), /remap\.len/);
});

Deno.test("uffd_msg: a read that is not whole messages is an error", () => {
  const [a, b] = socketpair({ nonblocking: true });
  try {
    writeFd(a, new Uint8Array(40));
    assert.throws(() => readMessages(b), /not a multiple of 32/);
  } finally {
    closeAll(a, b);
  }
});
