/**
 * The restorer socket: fd passing as `criu restore` does it, exact reads,
 * peer credentials and the listening socket.
 */
import assert from "node:assert/strict";
import {
  acceptOne,
  cmsgLen,
  cmsgSpace,
  connectUnix,
  E,
  eventfd,
  eventfdRead,
  eventfdWrite,
  listenUnix,
  openRead,
  peerCred,
  recvExact,
  recvFd,
  sendFd,
  socketpair,
  SysError,
  writeFd,
} from "../../ffi/mod.ts";
import { libc } from "../../ffi/libc.ts";
import { closeAll, fdTarget, newUffd } from "./helpers.ts";

const F_GETFD = 1;
const FD_CLOEXEC = 1;

function le32(n: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setInt32(0, n, true);
  return b;
}

/** A fresh temp file opened read-only: an fd whose target nobody else has. */
function uniqueFile(): { path: string; fd: number; close(): void } {
  const path = Deno.makeTempFileSync({ prefix: "lazyd-fd-" });
  const fd = openRead(path);
  return {
    path,
    fd,
    close() {
      closeAll(fd);
      Deno.removeSync(path);
    },
  };
}

/** The fds of this process open on `path` (robust against other tests' fds). */
function fdsOpenOn(path: string): number[] {
  const out: number[] = [];
  for (const e of Deno.readDirSync("/proc/self/fd")) {
    try {
      if (Deno.readLinkSync(`/proc/self/fd/${e.name}`) === path) {
        out.push(Number(e.name));
      }
    } catch {
      // closed meanwhile
    }
  }
  return out;
}

function int32(b: Uint8Array | null): number {
  assert.ok(b !== null, "unexpected EOF");
  return new DataView(b.buffer, b.byteOffset).getInt32(0, true);
}

Deno.test("socket: CMSG sizes for one fd are 20 and 24", () => {
  assert.equal(cmsgLen(4), 20);
  assert.equal(cmsgSpace(4), 24);
  assert.equal(cmsgSpace(8), 24);
  assert.equal(cmsgSpace(12), 32);
});

Deno.test("socket: the restorer's byte stream, read as CRIU's daemon does", () => {
  const [restorer, daemon] = socketpair();
  const uffd = newUffd();
  let got = -1;
  try {
    // pid 42 + its uffd (controllen = CMSG_LEN(4) = 20, like CRIU), zombie
    // 43, "restore finished", EOF. All written before anything is read, so
    // the stream holds the pid and the fd carrier back to back.
    writeFd(restorer, le32(42));
    sendFd(restorer, uffd, { controlLen: 20 });
    writeFd(restorer, le32(-43));
    writeFd(restorer, le32(0x52535446));
    closeAll(restorer);

    assert.equal(int32(recvExact(daemon, 4)), 42);
    const r = recvFd(daemon);
    got = r.fd;
    assert.equal(r.byte, 0);
    assert.notEqual(r.fd, uffd);
    assert.equal(fdTarget(r.fd), "anon_inode:[userfaultfd]");
    // MSG_CMSG_CLOEXEC took effect.
    assert.equal(libc().fcntl(r.fd, F_GETFD, 0n) & FD_CLOEXEC, FD_CLOEXEC);
    assert.equal(int32(recvExact(daemon, 4)), -43);
    assert.deepEqual(recvExact(daemon, 4), new TextEncoder().encode("FTSR"));
    assert.equal(recvExact(daemon, 4), null); // EOF at a record boundary
  } finally {
    closeAll(restorer, daemon, uffd, got);
  }
});

Deno.test("socket: a passed fd refers to the same object", () => {
  const [a, b] = socketpair();
  const efd = eventfd();
  let copy = -1;
  try {
    sendFd(a, efd, { payload: 0x5a, controlLen: cmsgSpace(4) });
    const r = recvFd(b);
    copy = r.fd;
    assert.equal(r.byte, 0x5a);
    eventfdWrite(efd, 3);
    assert.equal(eventfdRead(copy), 3);
  } finally {
    closeAll(a, b, efd, copy);
  }
});

Deno.test("socket: MSG_CTRUNC is detected and the fd is not leaked", () => {
  const [a, b] = socketpair();
  const file = uniqueFile();
  try {
    for (const controlLen of [16, 0]) {
      sendFd(a, file.fd);
      assert.throws(
        () => recvFd(b, { controlLen }),
        /MSG_CTRUNC.*discarded/,
      );
      // The kernel closed the fd it could not deliver.
      assert.deepEqual(fdsOpenOn(file.path), [file.fd]);
    }
  } finally {
    closeAll(a, b);
    file.close();
  }
});

Deno.test("socket: recvFd names what is wrong with the record", () => {
  const [a, b] = socketpair();
  const file = uniqueFile();
  try {
    // A byte without an fd.
    writeFd(a, new Uint8Array([0]));
    assert.throws(() => recvFd(b), /no SCM_RIGHTS control message/);
    // Two fds: both received and closed again.
    sendFd(a, [file.fd, file.fd]);
    assert.throws(
      () => recvFd(b, { controlLen: 32 }),
      /expected one fd, got 2/,
    );
    assert.deepEqual(fdsOpenOn(file.path), [file.fd]);
    // EOF.
    closeAll(a);
    assert.throws(() => recvFd(b), /EOF/);
  } finally {
    closeAll(a, b);
    file.close();
  }
});

Deno.test("socket: recvExact loops over short writes and rejects short EOF", () => {
  const [a, b] = socketpair();
  try {
    writeFd(a, new Uint8Array([1, 2]));
    writeFd(a, new Uint8Array([3]));
    writeFd(a, new Uint8Array([4, 5]));
    assert.deepEqual(recvExact(b, 4), new Uint8Array([1, 2, 3, 4]));
    closeAll(a);
    assert.throws(() => recvExact(b, 4), /EOF after 1 of 4 bytes/);
    assert.throws(() => recvExact(b, 0), RangeError);
  } finally {
    closeAll(a, b);
  }
});

Deno.test("socket: recvExact refuses to swallow an fd carrier", () => {
  const [a, b] = socketpair();
  const file = uniqueFile();
  try {
    writeFd(a, le32(42));
    sendFd(a, file.fd);
    // Reading 5 bytes runs into the fd-carrying byte: an error, and the fd
    // that came with it is closed rather than leaked.
    assert.throws(() => recvExact(b, 5), /unexpected SCM_RIGHTS/);
    assert.deepEqual(fdsOpenOn(file.path), [file.fd]);
  } finally {
    closeAll(a, b);
    file.close();
  }
});

Deno.test("socket: peerCred reports our own pid/uid/gid on a socketpair", () => {
  const [a, b] = socketpair();
  try {
    assert.deepEqual(peerCred(a), {
      pid: Deno.pid,
      uid: Deno.uid(),
      gid: Deno.gid(),
    });
    assert.throws(
      () => peerCred(1_000_000),
      (e) => e instanceof SysError && e.errno === E.EBADF,
    );
  } finally {
    closeAll(a, b);
  }
});

Deno.test("socket: listenUnix replaces a stale file, sets the mode, accepts", () => {
  const dir = Deno.makeTempDirSync();
  const path = `${dir}/lazy-pages.socket`;
  Deno.writeTextFileSync(path, "stale");
  const l = listenUnix(path, { backlog: 10, mode: 0o600 });
  let c = -1;
  let s = -1;
  try {
    const st = Deno.lstatSync(path);
    assert.ok(st.isSocket);
    assert.equal(st.mode! & 0o777, 0o600);
    c = connectUnix(path);
    s = acceptOne(l);
    assert.equal(peerCred(s).pid, Deno.pid);
    assert.equal(libc().fcntl(s, F_GETFD, 0n) & FD_CLOEXEC, FD_CLOEXEC);
    writeFd(c, le32(7));
    assert.equal(int32(recvExact(s, 4)), 7);
  } finally {
    closeAll(l, c, s);
  }
  // Like CRIU, the socket file is left behind; a relisten replaces it.
  assert.ok(Deno.lstatSync(path).isSocket);
  closeAll(listenUnix(path));
  Deno.removeSync(dir, { recursive: true });
});

Deno.test("socket: connect and bind failures are SysErrors", () => {
  const dir = Deno.makeTempDirSync();
  try {
    assert.throws(
      () => connectUnix(`${dir}/nobody`),
      (e) => e instanceof SysError && e.code === "ENOENT",
    );
    Deno.mkdirSync(`${dir}/adir`);
    assert.throws(
      () => listenUnix(`${dir}/adir`),
      (e) => e instanceof SysError && e.code === "EADDRINUSE",
    );
    assert.throws(() => listenUnix(`${dir}/${"x".repeat(120)}`), RangeError);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
