/**
 * The page-server client against a scripted server on the loopback: what
 * it sends, how it takes short replies, and that whatever a confused or
 * hostile server sends ends in a SourceError naming it, never in data
 * delivered to the wrong place or in unbounded memory.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  ImageDir,
  PE_LAZY,
  PE_PARENT,
  PE_PRESENT,
  readStamp,
  writeImageDir,
} from "../../src/images/mod.ts";
import { Epoll, EPOLLIN } from "../../ffi/mod.ts";
import {
  LocalSource,
  RemoteSource,
  SourceError,
} from "../../src/source/mod.ts";

const P = 4096;
const BASE = 0x7f00_0000_0000;
const PID = 42;

/** One request as the server saw it. */
interface Seen {
  cmd: number;
  pages: number;
  vaddr: number;
  pid: number;
}

/**
 * A page server that reads 24-byte headers and answers each with what
 * `reply` returns (raw bytes), on 127.0.0.1.
 */
function fakeServer(reply: (h: Seen) => Uint8Array | "close") {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const seen: Seen[] = [];
  const done = (async () => {
    let conn: Deno.Conn;
    try {
      conn = await listener.accept();
    } catch {
      return; // closed before the client was accepted
    }
    const buf = new Uint8Array(24);
    try {
      for (;;) {
        let got = 0;
        while (got < 24) {
          const n = await conn.read(buf.subarray(got));
          if (n === null) return;
          got += n;
        }
        const v = new DataView(buf.buffer);
        const h = {
          cmd: v.getUint32(0, true),
          pages: v.getUint32(4, true),
          vaddr: Number(v.getBigUint64(8, true)),
          pid: Number(v.getBigUint64(16, true)),
        };
        seen.push(h);
        const r = reply(h);
        if (r === "close") return;
        await conn.write(r);
      }
    } catch {
      // the client went away
    } finally {
      conn.close();
    }
  })();
  return {
    port: listener.addr.port,
    seen,
    close: async () => {
      listener.close();
      await done;
    },
  };
}

/** A reply header, then `pages` stamped pages starting at `vaddr`. */
function answer(
  h: { vaddr: number; pid: number },
  pages: number,
  options: { cmd?: number; tag?: number } = {},
): Uint8Array {
  const out = new Uint8Array(24 + pages * P);
  const v = new DataView(out.buffer);
  v.setUint32(0, options.cmd ?? 0x00040006, true);
  v.setUint32(4, pages, true);
  v.setBigUint64(8, BigInt(h.vaddr), true);
  v.setBigUint64(16, BigInt(h.pid), true);
  for (let i = 0; i < pages; i++) {
    const page = out.subarray(24 + i * P, 24 + (i + 1) * P);
    new DataView(page.buffer, page.byteOffset).setBigUint64(
      0,
      BigInt(h.vaddr + i * P),
      true,
    );
    page[8] = options.tag ?? 9;
  }
  return out;
}

/** Images: 8 lazy pages at BASE (no data here), 4 more lazy in the parent. */
function images(): { dir: ImageDir; root: string } {
  const root = Deno.makeTempDirSync({ prefix: "lazyd-remote-" });
  const vmas = [{ start: BASE, end: BASE + 16 * P }];
  writeImageDir(join(root, "parent"), {
    processes: [{
      pid: PID,
      vmas,
      pagemap: [{ vaddr: BASE + 8 * P, nrPages: 4, flags: PE_PRESENT }],
    }],
    tag: 5,
  });
  writeImageDir(join(root, "top"), {
    processes: [{
      pid: PID,
      vmas,
      pagemap: [
        { vaddr: BASE, nrPages: 8, flags: PE_LAZY },
        { vaddr: BASE + 8 * P, nrPages: 4, flags: PE_LAZY | PE_PARENT },
      ],
    }],
    parent: "../parent",
  });
  return { dir: ImageDir.open(join(root, "top")), root };
}

async function until<T>(what: string, f: () => T[]): Promise<T[]> {
  const end = Date.now() + 5000;
  for (;;) {
    const got = f();
    if (got.length > 0) return got;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

async function withClient(
  reply: (h: Seen) => Uint8Array | "close",
  fn: (
    c: RemoteSource<string>,
    s: ReturnType<typeof fakeServer>,
  ) => Promise<void>,
): Promise<void> {
  const server = fakeServer(reply);
  const { dir, root } = images();
  const c = RemoteSource.connect<string>({
    host: "127.0.0.1",
    port: server.port,
    dir,
    local: new LocalSource(dir),
    backgroundInflight: 8 * P,
  });
  try {
    await fn(c, server);
  } finally {
    c.abort();
    await server.close();
    Deno.removeSync(root, { recursive: true });
  }
}

Deno.test("remote: PS_IOV_GET with the plain pid and image address; the reply's pages land in the chunk", async () => {
  await withClient((h) => answer(h, h.pages), async (c, s) => {
    assert.equal(
      c.fetch({ pid: PID, image: BASE + P, len: 2 * P, urgent: true }, "a"),
      undefined,
    );
    const [done] = await until("the reply", () => c.onReady());
    assert.deepEqual(s.seen, [{ cmd: 7, pages: 2, vaddr: BASE + P, pid: PID }]);
    assert.equal(done.tag, "a");
    assert.equal(done.chunk.bytes.byteLength, 2 * P);
    assert.deepEqual(readStamp(done.chunk.bytes.subarray(P)), {
      addr: BASE + 2 * P,
      tag: 9,
    });
    done.chunk.release();
    assert.equal(c.stats().remotePagesReceived, 2);
  });
});

Deno.test("remote: a short reply completes with fewer pages; pipelined replies keep their order", async () => {
  await withClient((h) => answer(h, Math.min(h.pages, 3)), async (c) => {
    c.fetch({ pid: PID, image: BASE, len: 5 * P, urgent: false }, "bg");
    c.fetch({ pid: PID, image: BASE + 6 * P, len: P, urgent: true }, "fault");
    const got = await until("both replies", () => {
      const r = c.onReady();
      return r.length === 2 ? r : [];
    });
    assert.deepEqual(got.map((x) => x.tag), ["bg", "fault"]);
    assert.equal(got[0].chunk.bytes.byteLength, 3 * P, "short: 3 of 5 pages");
    assert.equal(got[1].chunk.bytes.byteLength, P);
  });
});

Deno.test("remote: background requests wait for the in-flight budget, faults never do", async () => {
  await withClient(() => "close", (c) => {
    assert.ok(c.canFetch(false));
    c.fetch({ pid: PID, image: BASE, len: 8 * P, urgent: false }, "bg");
    assert.equal(c.canFetch(false), false, "8 pages is the whole budget");
    assert.ok(c.canFetch(true));
    return Promise.resolve();
  });
});

Deno.test("remote: PE_LAZY|PE_PARENT pages are read from the parent chain, not asked for", async () => {
  await withClient((h) => answer(h, h.pages), async (c, s) => {
    const chunk = c.fetch(
      { pid: PID, image: BASE + 8 * P, len: 2 * P, urgent: true },
      "p",
    );
    assert.ok(chunk, "answered at once from local images");
    assert.deepEqual(readStamp(chunk.bytes), { addr: BASE + 8 * P, tag: 5 });
    await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(s.seen, [], "nothing was sent to the server");
  });
});

Deno.test("remote: a short reply still wakes epoll (the low-water mark never exceeds what must come)", async () => {
  // The server answers every request with one page: epoll must report the
  // socket readable for it although 8 pages were asked for.
  await withClient((h) => answer(h, 1), async (c) => {
    const ep = new Epoll();
    try {
      ep.add(c.fd, { events: EPOLLIN, token: 1 });
      c.fetch({ pid: PID, image: BASE, len: 8 * P, urgent: true }, "a");
      c.fetch({ pid: PID, image: BASE + 4 * P, len: 4 * P, urgent: true }, "b");
      // Nothing arrived yet (the server runs on this thread): this sets
      // the mark for what is still to come.
      assert.deepEqual(c.onReady(), []);
      const tags: string[] = [];
      const end = Date.now() + 5000;
      while (tags.length < 2) {
        if (Date.now() > end) throw new Error(`epoll never fired; got ${tags}`);
        await new Promise((r) => setTimeout(r, 5));
        if (ep.wait(0).length === 0) continue;
        for (const d of c.onReady()) {
          tags.push(d.tag);
          assert.equal(d.chunk.bytes.byteLength, P);
          d.chunk.release();
        }
      }
      assert.deepEqual(tags, ["a", "b"]);
    } finally {
      ep.close();
    }
  });
});

/**
 * A server on its own thread that behaves like CRIU's at the end of a
 * session: after PS_IOV_CLOSE it writes the status into a corked socket
 * (so it only leaves when the server closes), then waits for the
 * client's end of stream, then closes. Reports what it read.
 */
const CORKED_SERVER = `
const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
postMessage({ port: l.addr.port });
const conn = await l.accept();
const buf = new Uint8Array(64);
let got = 0;
while (got < 24) {
  const n = await conn.read(buf.subarray(got));
  if (n === null) break;
  got += n;
}
const cmd = new DataView(buf.buffer).getUint32(0, true);
const next = await conn.read(buf);
try {
  await conn.write(new Uint8Array(4));
} catch { /* the client is gone */ }
conn.close();
l.close();
postMessage({ cmd, next: next === null ? "eof" : "data" });
`;

Deno.test("remote: close() ends our stream first, so a corked server's status comes at once", async () => {
  const worker = new Worker(
    URL.createObjectURL(
      new Blob([CORKED_SERVER], { type: "application/javascript" }),
    ),
    { type: "module" },
  );
  const messages: Record<string, unknown>[] = [];
  const received = () =>
    new Promise<void>((r) => {
      worker.onmessage = (e) => {
        messages.push(e.data);
        r();
      };
    });
  const { dir, root } = images();
  try {
    await received();
    const c = RemoteSource.connect<string>({
      host: "127.0.0.1",
      port: messages[0].port as number,
      dir,
      local: new LocalSource(dir),
      backgroundInflight: 8 * P,
    });
    const report = received();
    const t0 = Date.now();
    // A client that waited for the status before closing would sit here
    // until its timeout: the server only sends it once it saw our end.
    const status = c.close({ timeoutMs: 3000 });
    const ms = Date.now() - t0;
    await report;
    assert.deepEqual(messages[1], { cmd: 0x1023, next: "eof" });
    assert.equal(status, 0, "the status word arrived");
    assert.ok(ms < 1500, `close() took ${ms} ms`);
  } finally {
    worker.terminate();
    Deno.removeSync(root, { recursive: true });
  }
});

for (
  const [name, reply, message] of [
    [
      "a reply for another address",
      (h: Seen) => answer({ ...h, vaddr: h.vaddr + P }, 1),
      /sent a reply for pid 42 at 0x7f0000001000 to a request for pid 42 at 0x7f0000000000/,
    ],
    [
      "a reply for another pid",
      (h: Seen) => answer({ ...h, pid: 7 }, 1),
      /a reply for pid 7/,
    ],
    [
      "more pages than asked for",
      (h: Seen) => answer(h, h.pages + 1000),
      /1001 pages in reply to a request for 1/,
    ],
    [
      "zero pages",
      (h: Seen) => answer(h, 0),
      /0 pages in reply/,
    ],
    [
      "another command",
      (h: Seen) => answer(h, 1, { cmd: 0x00010006 }),
      /a reply with command 0x10006/,
    ],
    [
      "a closed connection",
      () => "close" as const,
      /closed the connection while 1 request\(s\) were outstanding/,
    ],
  ] as const
) {
  Deno.test(`remote: ${name} is a SourceError naming the server`, async () => {
    await withClient(reply, async (c) => {
      c.fetch({ pid: PID, image: BASE, len: P, urgent: true }, "x");
      const end = Date.now() + 5000;
      let error: unknown;
      while (Date.now() < end && error === undefined) {
        try {
          c.onReady();
        } catch (e) {
          error = e;
        }
        await new Promise((r) => setTimeout(r, 5));
      }
      assert.ok(error instanceof SourceError, String(error));
      assert.match(error.message, /page server 127\.0\.0\.1:\d+/);
      assert.match(error.message, message);
    });
  });
}
