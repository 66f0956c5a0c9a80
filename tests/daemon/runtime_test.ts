/**
 * The runtime's handshake with `criu restore`, played by this test over
 * the UNIX socket of a real lazyd subprocess: the records restore sends
 * (pid words, uffds as SCM_RIGHTS, the finish word), what lazyd does with
 * wrong ones, and a complete session that delivers pages into this test's
 * own memory through a userfaultfd it registered.
 *
 * Image pids are below 300: Linux never hands those out again after the
 * pid counter wraps, so lazyd cannot find a host process for them among
 * this test's descendants (and never signals anything).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  allocPages,
  CRIU_FEATURES,
  PAGE_SIZE,
  sendFd,
  uffdApi,
  uffdRegister,
} from "../../ffi/mod.ts";
import { RESTORE_FINISHED } from "../../src/daemon/mod.ts";
import {
  PE_LAZY,
  PE_PRESENT,
  readStamp,
  type SyntheticDir,
  writeImageDir,
} from "../../src/images/mod.ts";
import { type LazydStats, waitFor } from "../e2e/env.ts";
import { FaultThread } from "../ffi/helpers.ts";
import {
  closeAll,
  connectRestore,
  isSocket,
  newUffd,
  serveDir,
  SOCKET,
  withTemp,
  word,
  writeAll,
} from "./_helpers.ts";

const P = PAGE_SIZE;
const LIVE = 10;
const ZOMBIE = 11;

/** pid 10 alive, without lazy pages; pid 11 a zombie. */
const TWO: SyntheticDir = {
  processes: [
    {
      pid: LIVE,
      vmas: [{ start: 0x400000, end: 0x402000 }],
      pagemap: [{ vaddr: 0x400000, nrPages: 1, flags: PE_PRESENT }],
    },
    { pid: ZOMBIE, ppid: LIVE },
  ],
};

/** The restore side of one connection. */
class Restore {
  #fd: number;
  constructor(fd: number) {
    this.#fd = fd;
  }
  /** A pid record (negative for a zombie). */
  pid(pid: number): void {
    writeAll(this.#fd, word(pid));
  }
  /** The byte carrying a uffd. */
  uffd(fd: number): void {
    sendFd(this.#fd, fd);
  }
  /** "Restore finished" (or any other word). */
  finish(value = RESTORE_FINISHED): void {
    writeAll(this.#fd, word(value));
  }
  /** Hangs up (idempotent). */
  close(): void {
    if (this.#fd >= 0) closeAll(this.#fd);
    this.#fd = -1;
  }
}

/** A uffd as a restored process has it: API done, nothing registered. */
function idleUffd(): number {
  const fd = newUffd();
  uffdApi(fd, { features: CRIU_FEATURES });
  return fd;
}

interface Result {
  code: number;
  log: string;
  stats: LazydStats;
  stderr: string;
}

/**
 * Writes `spec` (or lets `images` write the directory), starts lazyd on it
 * (-v4, log and stats in the directory), connects, and lets `play` act as
 * restore. Resolves once lazyd has exited (killing it after 30 s).
 */
async function session(
  images: SyntheticDir | ((dir: string) => void),
  play: (r: Restore, dir: string) => void | Promise<void>,
): Promise<Result> {
  return await withTemp("runtime", async (dir) => {
    if (typeof images === "function") images(dir);
    else writeImageDir(dir, images);
    const lazyd = await serveDir(dir, [
      "-v4",
      "-o",
      "lazyd.log",
      "--stats-file",
      "stats.json",
    ]);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const r = new Restore(await connectRestore(dir));
    try {
      await play(r, dir);
      const out = await Promise.race([
        lazyd.done,
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () => reject(new Error("lazyd did not exit within 30 s")),
            30_000,
          );
        }),
      ]);
      const log = Deno.readTextFileSync(join(dir, "lazyd.log"));
      return {
        code: out.code,
        log,
        stderr: out.stderr,
        stats: JSON.parse(Deno.readTextFileSync(join(dir, "stats.json"))),
      };
    } finally {
      clearTimeout(timer);
      r.close();
      await lazyd.stop();
    }
  });
}

/** The log's error lines. */
function errors(log: string): string[] {
  return log.split("\n").filter((l) => l.includes("Error (lazyd): "));
}

Deno.test("runtime: a zombie and a live process without lazy pages, then 'restore finished': exit 0", async () => {
  const uffd = idleUffd();
  try {
    const res = await session(TWO, async (r, dir) => {
      // The socket file goes as soon as the connection is accepted.
      const sock = join(dir, SOCKET);
      const end = Date.now() + 10_000;
      while (isSocket(sock)) {
        assert.ok(Date.now() < end, "the socket file is still there");
        await new Promise((ok) => setTimeout(ok, 10));
      }
      r.pid(-ZOMBIE); // records come in any order
      r.pid(LIVE);
      r.uffd(uffd);
      r.finish();
    });
    assert.equal(res.code, 0, res.log);
    assert.deepEqual(errors(res.log), []);
    assert.equal(res.stats.exitCode, 0);
    assert.equal(res.stats.error, undefined);
    assert.equal(res.stats.processes.length, 1);
    const [p] = res.stats.processes;
    assert.equal(p.imagePid, LIVE);
    assert.equal(p.end, "complete");
    assert.equal(p.hostPid, undefined, "no such process below this test");
    assert.equal(p.counters.totalPages, 0);
    assert.equal(p.counters.copiedPages, 0);
    assert.match(res.log, /zombie pid -11/);
    assert.match(res.log, /received pid 10 \(host unknown\) with uffd \d+/);
    assert.match(res.log, /restore finished/);
    assert.match(res.log, /10-\d+: complete: UFFD transferred pages: \(0\/0\)/);
  } finally {
    closeAll(uffd);
  }
});

Deno.test("runtime: a pid that is not in pstree.img stops lazyd, naming it", async () => {
  const res = await session(TWO, (r) => {
    r.pid(-ZOMBIE);
    r.pid(999);
  });
  assert.equal(res.code, 1);
  assert.equal(res.stats.exitCode, 1);
  assert.match(
    res.stats.error ?? "",
    /^restore sent pid 999 in record 2; pstree\.img has 10$/,
  );
  assert.equal(errors(res.log).length, 1, res.log);
  assert.match(errors(res.log)[0], /restore sent pid 999/);
});

Deno.test("runtime: the same pid twice, and pid 0, are refused", async () => {
  const twice = await session(TWO, (r) => {
    r.pid(-ZOMBIE);
    r.pid(-ZOMBIE);
  });
  assert.equal(twice.code, 1);
  assert.match(
    twice.stats.error ?? "",
    /^restore sent pid -11 in record 2; pstree\.img has 10$/,
  );

  const zero = await session(TWO, (r) => r.pid(0));
  assert.equal(zero.code, 1);
  assert.match(zero.stats.error ?? "", /^restore sent pid 0 in record 1/);
});

Deno.test("runtime: EOF before all records: 'restore closed the connection'", async () => {
  const res = await session(TWO, (r) => {
    r.pid(-ZOMBIE);
    r.close();
  });
  assert.equal(res.code, 1);
  assert.match(
    res.stats.error ?? "",
    /^restore closed the connection before sending the pid of record 2 of 2 \(restore failed; see its log\)$/,
  );
  assert.match(errors(res.log)[0] ?? "", /restore closed the connection/);
});

Deno.test("runtime: a uffd for a pid without memory images is refused", async () => {
  const uffd = idleUffd();
  try {
    const res = await session(TWO, (r) => {
      r.pid(ZOMBIE); // a live record for the zombie's pid
      r.uffd(uffd);
    });
    assert.equal(res.code, 1);
    assert.match(
      res.stats.error ?? "",
      /^restore sent a uffd for pid 11, which has no pagemap in the images$/,
    );
  } finally {
    closeAll(uffd);
  }
});

Deno.test("runtime: a wrong finish word: 'unexpected word'", async () => {
  const uffd = idleUffd();
  try {
    const res = await session(TWO, (r) => {
      r.pid(LIVE);
      r.uffd(uffd);
      r.pid(-ZOMBIE);
      r.finish(0xdeadbeef);
    });
    assert.equal(res.code, 1);
    assert.match(
      res.stats.error ?? "",
      /^unexpected word 0xdeadbeef from restore$/,
    );
    // The process that was handed over is reported as failed, not left
    // unaccounted for.
    assert.equal(res.stats.processes[0].end, "failed");
    assert.match(
      res.stats.processes[0].reason ?? "",
      /the daemon stopped before delivering its pages/,
    );
  } finally {
    closeAll(uffd);
  }
});

Deno.test("runtime: hanging up after the records but before 'restore finished'", async () => {
  const uffd = idleUffd();
  try {
    const res = await session(TWO, (r) => {
      r.pid(LIVE);
      r.uffd(uffd);
      r.pid(-ZOMBIE);
      r.close();
    });
    assert.equal(res.code, 1);
    assert.match(
      res.stats.error ?? "",
      /^restore (closed the connection|hung up) before it finished/,
    );
  } finally {
    closeAll(uffd);
  }
});

Deno.test("runtime: a whole session: a fault from another thread, then the background pass", async () => {
  // The "restored process" is this test: its memory is registered with a
  // uffd that is handed to lazyd, and the images describe that memory at
  // its real addresses.
  const PAGES = 24;
  const TAG = 0x5a;
  const region = allocPages(PAGES * P);
  const uffd = newUffd();
  let sent = false;
  const worker = new FaultThread({ timeoutMs: 10_000 });
  try {
    // No events: this process may fork or unmap as it likes meanwhile.
    uffdApi(uffd, { features: 0 });
    uffdRegister(uffd, { start: region.address, len: PAGES * P });
    const a = region.address;
    const res = await session((dir) =>
      writeImageDir(dir, {
        tag: TAG,
        processes: [{
          pid: LIVE,
          vmas: [{ start: a, end: a + PAGES * P }],
          pagemap: [
            { vaddr: a, nrPages: 4, flags: PE_PRESENT }, // restore's
            { vaddr: a + 4 * P, nrPages: 20, flags: PE_LAZY | PE_PRESENT },
          ],
        }],
      }), async (r) => {
      r.pid(LIVE);
      r.uffd(uffd);
      // lazyd holds its own copy now; once it exits the registration
      // ends with it, so nothing in this test can block for ever.
      closeAll(uffd);
      sent = true;
      // A read of page 10 blocks until lazyd serves it: byte 8 of every
      // delivered page is the tag.
      assert.equal(
        await worker.run({ op: "read", address: a + 10 * P + 8 }),
        TAG,
      );
      r.finish();
    });
    assert.equal(res.code, 0, res.log);
    assert.deepEqual(errors(res.log), []);
    const [p] = res.stats.processes;
    assert.equal(p.end, "complete");
    assert.equal(p.counters.totalPages, 20);
    assert.equal(p.counters.copiedPages, 20);
    assert.equal(p.counters.faults, 1);
    // The fault brought the default window (16 pages) from page 10 on,
    // clipped to the lazy range's end at page 24; the background the rest.
    assert.equal(p.counters.backgroundPages, 20 - 14);
    assert.equal(p.counters.zeroPages, 0);
    assert.deepEqual(Object.values(res.stats.source!.bytesByFile), [20 * P]);
    assert.match(res.log, /#PF at 0x/);
    // Every lazy page arrived at its address.
    for (let i = 4; i < PAGES; i++) {
      assert.deepEqual(
        readStamp(region.bytes.subarray(i * P, (i + 1) * P)),
        { addr: a + i * P, tag: TAG },
        `page ${i}`,
      );
    }
  } finally {
    if (!sent) closeAll(uffd);
    worker.terminate();
    region.free();
  }
});

Deno.test("runtime: pages that cannot be read fail the process; lazyd exits 1", async () => {
  const PAGES = 8;
  const region = allocPages(PAGES * P);
  const uffd = newUffd();
  let sent = false;
  try {
    uffdApi(uffd, { features: 0 });
    uffdRegister(uffd, { start: region.address, len: PAGES * P });
    const a = region.address;
    const res = await session((dir) =>
      writeImageDir(dir, {
        processes: [{
          pid: LIVE,
          vmas: [{ start: a, end: a + PAGES * P }],
          pagemap: [{ vaddr: a, nrPages: PAGES, flags: PE_LAZY | PE_PRESENT }],
        }],
      }), (r, dir) => {
      // lazyd checked the pages file at start; it loses its data now.
      Deno.truncateSync(join(dir, "pages-1.img"), 0);
      r.pid(LIVE);
      r.uffd(uffd);
      closeAll(uffd);
      sent = true;
      r.finish();
    });
    assert.equal(res.code, 1);
    const [p] = res.stats.processes;
    assert.equal(p.end, "failed");
    assert.match(p.reason ?? "", /pages file too short/);
    assert.equal(p.counters.copiedPages, 0);
    // Not killed (no host pid), and the log says so.
    assert.match(
      errors(res.log).join("\n"),
      /pages file too short.*its host pid is unknown, so it could not be killed/,
    );
  } finally {
    if (!sent) closeAll(uffd);
    region.free();
  }
});

Deno.test("runtime: SIGTERM while restore is connected but has not handed everything over: lazyd exits 1", async () => {
  // Until every record has arrived no restored process runs: restore
  // fails and kills its tree once lazyd is gone, so lazyd need not (and,
  // blocked in the handshake's reads, could not) finish anything.
  await withTemp("runtime", async (dir) => {
    writeImageDir(dir, TWO);
    const lazyd = await serveDir(dir, ["-v3", "-o", "lazyd.log"]);
    const fd = await connectRestore(dir);
    try {
      const log = join(dir, "lazyd.log");
      await waitFor(
        "lazyd to accept the connection",
        () => Deno.readTextFileSync(log).includes("restore connected"),
        { timeoutMs: 10_000 },
      );
      lazyd.proc.kill("SIGTERM");
      await waitFor("lazyd to exit", () => lazyd.exited(), {
        timeoutMs: 3000,
      });
      assert.equal((await lazyd.done).code, 1);
    } finally {
      closeAll(fd);
      await lazyd.stop();
    }
  });
});
