import assert from "node:assert/strict";
import {
  closeFd,
  E,
  Epoll,
  EPOLLIN,
  getpid,
  getuid,
  kill,
  O,
  openRead,
  pidfdOpen,
  pidfdSendSignal,
  pread,
  readFd,
  setNonblocking,
  SIG,
  socketpair,
  SysError,
  writeFd,
} from "../../ffi/mod.ts";
import { libc } from "../../ffi/libc.ts";
import { closeAll } from "./helpers.ts";

const F_GETFL = 3;

Deno.test("process: pread at an offset beyond 4 GiB in a sparse file", () => {
  const path = Deno.makeTempFileSync();
  const offset = 5 * 2 ** 30 - 4096 + 10; // > 2^32, not page aligned
  const marker = new TextEncoder().encode("lazyd-marker");
  let fd = -1;
  try {
    Deno.truncateSync(path, 5 * 2 ** 30);
    const f = Deno.openSync(path, { write: true });
    f.seekSync(offset, Deno.SeekMode.Start);
    f.writeSync(marker);
    f.close();

    fd = openRead(path);
    const buf = new Uint8Array(marker.length);
    assert.equal(pread(fd, buf, { offset }), marker.length);
    assert.deepEqual(buf, marker);
    // The same offset truncated to 32 bits would read zeros.
    assert.equal(pread(fd, buf, { offset: offset % 2 ** 32 }), marker.length);
    assert.ok(buf.every((x) => x === 0));
    // Short at end of file, 0 past it.
    const tail = new Uint8Array(100);
    assert.equal(pread(fd, tail, { offset: 5 * 2 ** 30 - 40 }), 40);
    assert.equal(pread(fd, tail, { offset: 6 * 2 ** 30 }), 0);
    assert.throws(() => pread(fd, tail, { offset: -1 }), RangeError);
  } finally {
    closeAll(fd);
    Deno.removeSync(path);
  }
});

Deno.test("process: openRead is read-only and close-on-exec", () => {
  const fd = openRead("/proc/self/stat");
  try {
    const flags = libc().fcntl(fd, F_GETFL, 0n);
    assert.equal(flags & 3, O.RDONLY);
    assert.equal(libc().fcntl(fd, 1, /* F_GETFD */ 0n) & 1, 1);
    const buf = new Uint8Array(64);
    const n = readFd(fd, buf)!;
    assert.ok(n > 0);
    const pid = Number(
      new TextDecoder().decode(buf.subarray(0, n)).split(" ")[0],
    );
    assert.equal(pid, Deno.pid);
  } finally {
    closeFd(fd);
  }
});

Deno.test("process: readFd/writeFd report EAGAIN as null", () => {
  const [a, b] = socketpair();
  try {
    setNonblocking(b, true);
    assert.ok(libc().fcntl(b, F_GETFL, 0n) & O.NONBLOCK);
    assert.equal(readFd(b, new Uint8Array(8)), null);
    assert.equal(writeFd(a, new Uint8Array([1, 2, 3])), 3);
    const buf = new Uint8Array(8);
    assert.equal(readFd(b, buf), 3);
    setNonblocking(b, false);
    assert.equal(libc().fcntl(b, F_GETFL, 0n) & O.NONBLOCK, 0);
    closeAll(a);
    assert.equal(readFd(b, buf), 0); // EOF
  } finally {
    closeAll(a, b);
  }
});

Deno.test("process: getpid/getuid agree with Deno", () => {
  assert.equal(getpid(), Deno.pid);
  assert.equal(getuid(), Deno.uid());
  kill(getpid(), 0);
});

Deno.test("process: pidfd becomes readable when the process dies", async () => {
  const child = new Deno.Command("sleep", { args: ["30"] }).spawn();
  const ep = new Epoll();
  let pidfd = -1;
  try {
    pidfd = pidfdOpen(child.pid);
    ep.add(pidfd, { events: EPOLLIN, token: 1 });
    assert.deepEqual(ep.wait(0), []);
    pidfdSendSignal(pidfd, 0);
    pidfdSendSignal(pidfd, SIG.KILL);
    assert.deepEqual(ep.wait(5000), [{ token: 1, events: EPOLLIN }]);
    const status = await child.status;
    assert.equal(status.signal, "SIGKILL");
    // Reaped: the pidfd still refers to it, and signalling it says ESRCH.
    assert.throws(
      () => pidfdSendSignal(pidfd, 0),
      (e) => e instanceof SysError && e.errno === E.ESRCH,
    );
    assert.throws(
      () => kill(child.pid, 0),
      (e) => e instanceof SysError && e.errno === E.ESRCH,
    );
  } finally {
    closeAll(pidfd);
    ep.close();
    try {
      child.kill("SIGKILL");
    } catch {
      // already dead
    }
  }
});

Deno.test("process: pidfdOpen of a missing pid is ESRCH", () => {
  assert.throws(
    () => pidfdOpen(0x7fff_fff0),
    (e) =>
      e instanceof SysError && e.code === "ESRCH" && e.call === "pidfd_open",
  );
});
