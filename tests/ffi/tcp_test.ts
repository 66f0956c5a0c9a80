import assert from "node:assert/strict";
import {
  closeFd,
  E,
  Epoll,
  EPOLLIN,
  libc,
  readFd,
  SOCK_CLOEXEC,
  SysError,
  writeFd,
} from "../../ffi/mod.ts";
import {
  connectTcp,
  recvSome,
  resolveTcp,
  setRecvLowat,
  shutdownWrite,
} from "../../ffi/tcp.ts";

Deno.test("tcp: connectTcp reaches IPv4 and IPv6 listeners, non-blocking", async () => {
  for (const hostname of ["127.0.0.1", "::1"]) {
    const listener = Deno.listen({ hostname, port: 0 });
    const { fd, peer } = connectTcp(hostname, listener.addr.port, {
      timeoutMs: 5_000,
    });
    assert.equal(
      peer,
      hostname === "::1"
        ? `[0:0:0:0:0:0:0:1]:${listener.addr.port}`
        : `127.0.0.1:${listener.addr.port}`,
    );
    try {
      const conn = await listener.accept();
      assert.equal(readFd(fd, new Uint8Array(1)), null); // EAGAIN: non-blocking
      assert.equal(writeFd(fd, new TextEncoder().encode("hi")), 2);
      const buf = new Uint8Array(2);
      assert.equal(await conn.read(buf), 2);
      assert.equal(new TextDecoder().decode(buf), "hi");
      await conn.write(new TextEncoder().encode("!"));
      conn.close();
      // Bounded spin: the byte and the FIN arrive over loopback at once.
      let got: number | null = null;
      const until = performance.now() + 5_000;
      while (got === null && performance.now() < until) {
        got = readFd(fd, buf);
        if (got === null) await new Promise((r) => setTimeout(r, 5));
      }
      assert.equal(got, 1);
      assert.equal(
        Deno.readLinkSync(`/proc/self/fd/${fd}`).startsWith("socket:"),
        true,
      );
      const flags = Deno.readTextFileSync(`/proc/self/fdinfo/${fd}`);
      const f = parseInt(/flags:\s+(\d+)/.exec(flags)![1], 8);
      assert.ok(f & 0o4000, "O_NONBLOCK");
      assert.ok(f & 0o2000000, "O_CLOEXEC");
    } finally {
      closeFd(fd);
      listener.close();
    }
  }
});

Deno.test("tcp: connectTcp errors name the address", () => {
  // A port nobody listens on: bind one, note it, close it.
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = l.addr.port;
  l.close();
  assert.throws(
    () => connectTcp("127.0.0.1", port, { timeoutMs: 5_000 }),
    (e) => {
      assert.ok(e instanceof SysError);
      assert.equal(e.errno, E.ECONNREFUSED);
      assert.equal(e.call, `connect(127.0.0.1:${port})`);
      return true;
    },
  );
  assert.throws(() => connectTcp("::1", port, { timeoutMs: 5_000 }), (e) => {
    assert.ok(e instanceof SysError);
    assert.equal(e.errno, E.ECONNREFUSED);
    assert.equal(e.call, `connect([0:0:0:0:0:0:0:1]:${port})`);
    return true;
  });
  assert.throws(
    () => connectTcp("no-such-host.invalid", 1),
    /cannot resolve no-such-host\.invalid/,
  );
  assert.ok(resolveTcp("localhost", 27).length > 0, "names resolve");
  assert.throws(() => connectTcp("127.0.0.1", 0), RangeError);
  assert.throws(() => connectTcp("127.0.0.1", 65536), RangeError);
});

Deno.test("tcp: connectTcp gives up after timeoutMs", () => {
  // A listener with a full accept queue drops further SYNs, so a connect
  // stays pending (the kernel would retry for about two minutes).
  const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = probe.addr.port;
  probe.close();
  const lfd = libc().socket(2, 1 | SOCK_CLOEXEC, 0); // AF_INET, SOCK_STREAM
  assert.ok(lfd >= 0);
  const fds: number[] = [];
  try {
    const addr = new Uint8Array(16);
    const view = new DataView(addr.buffer);
    view.setUint16(0, 2, true);
    view.setUint16(2, port, false);
    addr.set([127, 0, 0, 1], 4);
    assert.equal(libc().bind(lfd, addr, addr.length), 0);
    assert.equal(libc().listen(lfd, 0), 0);
    const t0 = performance.now();
    let timedOut: SysError | undefined;
    // Backlog 0 still queues one connection; the next ones hang.
    for (let i = 0; i < 4 && timedOut === undefined; i++) {
      try {
        fds.push(connectTcp("127.0.0.1", port, { timeoutMs: 200 }).fd);
      } catch (e) {
        if (!(e instanceof SysError)) throw e;
        timedOut = e;
      }
    }
    assert.ok(timedOut !== undefined, "every connect succeeded");
    assert.equal(timedOut.errno, E.ETIMEDOUT);
    assert.equal(timedOut.call, `connect(127.0.0.1:${port})`);
    assert.ok(performance.now() - t0 < 2_000);
  } finally {
    for (const fd of fds) closeFd(fd);
    closeFd(lfd);
  }
});

Deno.test("tcp: shutdownWrite ends our stream and keeps the other direction; setRecvLowat holds back epoll", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { fd } = connectTcp("127.0.0.1", listener.addr.port);
  const ep = new Epoll();
  try {
    const conn = await listener.accept();
    shutdownWrite(fd);
    assert.equal(await conn.read(new Uint8Array(8)), null, "the peer sees EOF");
    setRecvLowat(fd, 100);
    ep.add(fd, { events: EPOLLIN, token: 7 });
    await conn.write(new Uint8Array(99));
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(ep.wait(0), [], "99 bytes are below the mark");
    await conn.write(new Uint8Array(1));
    let ready: unknown[] = [];
    const until = performance.now() + 5_000;
    while (ready.length === 0 && performance.now() < until) {
      await new Promise((r) => setTimeout(r, 5));
      ready = ep.wait(0);
    }
    assert.equal(ready.length, 1, "100 bytes reach it");
    assert.equal(recvSome(fd, new Uint8Array(200)), 100);
    conn.close();
  } finally {
    ep.close();
    closeFd(fd);
    listener.close();
  }
});
