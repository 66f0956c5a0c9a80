import assert from "node:assert/strict";
import {
  check,
  closeFd,
  E,
  errno,
  errnoName,
  kill,
  openRead,
  strerror,
  SysError,
  toSafeNumber,
} from "../../ffi/mod.ts";

Deno.test("errno: a failed close is a SysError with EBADF", () => {
  try {
    closeFd(1_000_000);
    assert.fail("close of a bad fd succeeded");
  } catch (e) {
    assert.ok(e instanceof SysError);
    assert.equal(e.errno, E.EBADF);
    assert.equal(e.code, "EBADF");
    assert.equal(e.call, "close");
    assert.equal(e.name, "SysError");
    assert.match(e.message, /^close: Bad file descriptor \(EBADF\)$/);
    assert.equal(errno(), E.EBADF);
  }
});

Deno.test("errno: ENOENT and ESRCH carry their codes", () => {
  assert.throws(
    () => openRead("/nonexistent/lazyd-test"),
    (e) => e instanceof SysError && e.code === "ENOENT" && e.errno === 2,
  );
  // pid_max is at most 2^22, so this pid cannot exist.
  assert.throws(
    () => kill(0x7fff_fff0, 0),
    (e) => e instanceof SysError && e.code === "ESRCH" && e.errno === 3,
  );
});

Deno.test("errno: table values match Linux x86_64", () => {
  assert.deepEqual(
    [
      E.ENOENT,
      E.ESRCH,
      E.EINTR,
      E.EBADF,
      E.EAGAIN,
      E.ENOMEM,
      E.EFAULT,
      E.EEXIST,
      E.EINVAL,
      E.ENOSPC,
      E.EPIPE,
      E.ECONNRESET,
    ],
    [2, 3, 4, 9, 11, 12, 14, 17, 22, 28, 32, 104],
  );
  assert.equal(errnoName(11), "EAGAIN");
  assert.equal(errnoName(9999), "E9999");
  assert.equal(strerror(E.EEXIST), "File exists");
});

Deno.test("errno: check passes results through and converts bigints", () => {
  assert.equal(check(5, "x"), 5);
  assert.equal(check(0n, "x"), 0);
  assert.equal(check(4096n, "x"), 4096);
  assert.throws(() => check(-1n, "read"), SysError);
  assert.equal(toSafeNumber(2n ** 53n - 1n, "v"), Number.MAX_SAFE_INTEGER);
  assert.throws(() => toSafeNumber(2n ** 53n, "v"), RangeError);
  assert.throws(() => toSafeNumber(2n ** 53n + 1n, "v"), RangeError);
});
