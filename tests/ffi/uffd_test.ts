/**
 * userfaultfd ioctls on this test's own memory. Only ioctls: touching a
 * missing page of a registered range from this thread would block it
 * forever (uffd_fault_test.ts faults from a worker instead).
 */
import assert from "node:assert/strict";
import {
  allocPages,
  E,
  PAGE_SIZE,
  readMessages,
  SysError,
  UFFD_FEATURE,
  uffdApi,
  uffdCopy,
  UFFDIO_BIT,
  uffdRegister,
  uffdUnregister,
  uffdWake,
  uffdZeropage,
} from "../../ffi/mod.ts";
import { closeAll, fdTarget, newUffd } from "./helpers.ts";

const P = PAGE_SIZE;

Deno.test("uffd: API handshake reports supported features and ioctls", () => {
  const fd = newUffd();
  try {
    assert.equal(fdTarget(fd), "anon_inode:[userfaultfd]");
    const api = uffdApi(fd, { features: 0 });
    // With features 0 the kernel reports everything it supports; all four
    // events CRIU asks for exist since Linux 4.11.
    for (
      const f of [
        UFFD_FEATURE.EVENT_FORK,
        UFFD_FEATURE.EVENT_REMAP,
        UFFD_FEATURE.EVENT_REMOVE,
        UFFD_FEATURE.EVENT_UNMAP,
      ]
    ) assert.ok(api.features & f, `feature 0x${f.toString(16)}`);
    assert.equal(typeof api.ioctls, "bigint");
    assert.ok(api.ioctls & (1n << 63n), "API bit 63 needs a bigint");
    assert.ok(api.ioctls & (1n << BigInt(UFFDIO_BIT.REGISTER)));
    assert.ok(api.ioctls & (1n << BigInt(UFFDIO_BIT.UNREGISTER)));
    // A second handshake is refused.
    assert.throws(
      () => uffdApi(fd, { features: 0 }),
      (e) => e instanceof SysError && e.errno === E.EINVAL,
    );
  } finally {
    closeAll(fd);
  }
});

Deno.test("uffd: nothing pending reads as [] (EAGAIN)", () => {
  const fd = newUffd();
  try {
    uffdApi(fd);
    assert.deepEqual(readMessages(fd), []);
    assert.deepEqual(readMessages(fd, { max: 1 }), []);
  } finally {
    closeAll(fd);
  }
});

Deno.test("uffd: COPY, ZEROPAGE, EEXIST, partial copy, ENOENT, WAKE, UNREGISTER", () => {
  const fd = newUffd();
  const region = allocPages(8 * P); // registered; pages start missing
  const src = allocPages(4 * P); // our source buffer, never registered
  const other = allocPages(P); // never registered
  try {
    uffdApi(fd);
    const ioctls = uffdRegister(fd, { start: region.address, len: 8 * P });
    for (const bit of [UFFDIO_BIT.WAKE, UFFDIO_BIT.COPY, UFFDIO_BIT.ZEROPAGE]) {
      assert.ok(ioctls & (1 << bit), `range ioctl bit ${bit}`);
    }
    for (let i = 0; i < src.size; i++) src.bytes[i] = (i * 7 + 3) & 0xff;
    const at = (page: number) => region.address + page * P;
    const pageOf = (page: number) =>
      region.bytes.subarray(page * P, (page + 1) * P);

    // page 0: a full copy, then read it back (present now, so safe).
    assert.deepEqual(
      uffdCopy(fd, { dst: at(0), src: src.address, len: P }),
      { copied: P, error: 0 },
    );
    assert.deepEqual(pageOf(0), src.bytes.subarray(0, P));

    // page 1: the zero page.
    assert.deepEqual(uffdZeropage(fd, { start: at(1), len: P }), {
      copied: P,
      error: 0,
    });
    assert.ok(pageOf(1).every((x) => x === 0));

    // Filling a present page: nothing done, the error comes from the
    // struct's out field (-EEXIST).
    assert.deepEqual(
      uffdCopy(fd, { dst: at(0), src: src.address + P, len: P }),
      { copied: 0, error: E.EEXIST },
    );
    assert.deepEqual(pageOf(0), src.bytes.subarray(0, P)); // unchanged
    assert.deepEqual(uffdZeropage(fd, { start: at(1), len: P }), {
      copied: 0,
      error: E.EEXIST,
    });

    // Pages [2, 6) with page 3 already present: page 2 is copied, then the
    // kernel stops and fails with EAGAIN, reporting the partial count.
    assert.deepEqual(
      uffdCopy(fd, { dst: at(3), src: src.address + 3 * P, len: P }),
      { copied: P, error: 0 },
    );
    assert.deepEqual(
      uffdCopy(fd, { dst: at(2), src: src.address, len: 4 * P }),
      { copied: P, error: E.EAGAIN },
    );
    assert.deepEqual(pageOf(2), src.bytes.subarray(0, P));
    assert.deepEqual(pageOf(3), src.bytes.subarray(3 * P, 4 * P));

    // Same for ZEROPAGE over [6, 8) when page 7 is present; and a range
    // whose first page is present does nothing (EEXIST, not EAGAIN).
    assert.deepEqual(uffdZeropage(fd, { start: at(7), len: P }), {
      copied: P,
      error: 0,
    });
    assert.deepEqual(uffdZeropage(fd, { start: at(6), len: 2 * P }), {
      copied: P,
      error: E.EAGAIN,
    });
    assert.deepEqual(uffdZeropage(fd, { start: at(3), len: 2 * P }), {
      copied: 0,
      error: E.EEXIST,
    });

    // A destination outside any registered range.
    assert.deepEqual(
      uffdCopy(fd, { dst: other.address, src: src.address, len: P }),
      { copied: 0, error: E.ENOENT },
    );
    // A range spilling over the end of the registered VMA: the part inside
    // is not even attempted (the range must lie in one VMA).
    assert.equal(
      uffdCopy(fd, { dst: at(7), src: src.address, len: 2 * P }).error,
      E.ENOENT,
    );
    // Misaligned dst: argument validation fails before the out field is
    // written, so errno is the fallback.
    assert.deepEqual(
      uffdCopy(fd, { dst: at(4) + 8, src: src.address, len: P }),
      { copied: 0, error: E.EINVAL },
    );
    assert.deepEqual(uffdZeropage(fd, { start: at(4), len: 100 }), {
      copied: 0,
      error: E.EINVAL,
    });

    uffdWake(fd, { start: region.address, len: 8 * P });

    // After UNREGISTER the still-missing page 4 is ordinary memory: reading
    // it is a normal zero-fill fault, and COPY there is ENOENT.
    uffdUnregister(fd, { start: region.address, len: 8 * P });
    assert.ok(pageOf(4).every((x) => x === 0));
    assert.equal(
      uffdCopy(fd, { dst: at(4), src: src.address, len: P }).error,
      E.ENOENT,
    );
    assert.throws(
      () => uffdUnregister(fd, { start: region.address + 1, len: P }),
      (e) => e instanceof SysError && e.code === "EINVAL",
    );
  } finally {
    // Close the uffd before unmapping: munmap of a range still registered
    // for UNMAP events would wait for a reader.
    closeAll(fd);
    region.free();
    src.free();
    other.free();
  }
});

Deno.test("uffd: unsafe addresses are rejected before the ioctl", () => {
  assert.throws(
    () => uffdCopy(-1, { dst: 2 ** 53, src: 0, len: P }),
    RangeError,
  );
  assert.throws(() => uffdZeropage(-1, { start: -P, len: P }), RangeError);
});

Deno.test("uffd: a closed fd reports EBADF through errno", () => {
  assert.deepEqual(uffdCopy(-1, { dst: 0, src: 0, len: P }), {
    copied: 0,
    error: E.EBADF,
  });
  assert.throws(
    () => readMessages(-1),
    (e) => e instanceof SysError && e.code === "EBADF",
  );
});
