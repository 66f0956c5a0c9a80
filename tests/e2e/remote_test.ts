/**
 * Lazy migration: lazyd fetches pages from CRIU's own page server
 * (`criu dump --lazy-pages`, `criu page-server --lazy-pages`) while `criu
 * restore --lazy-pages` runs the processes.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { haveOpenssl, makePki, type Pki } from "../source/fixtures/tls_peer.ts";
import {
  copyImages,
  CRIU,
  CRIU_ENV,
  dump,
  dumpLazy,
  e2eTest,
  freePort,
  lazydCommand,
  type LazydStats,
  type LazyDump,
  makeVethPair,
  type Need,
  restoreLazy,
  run,
  scratch,
  startDaemon,
  startLazyd,
  startWorkload,
  tail,
  verifyRestored,
  waitFor,
  waitGone,
  type Workload,
} from "./env.ts";

const NEEDS: Need[] = ["root", "criu", "gcc", "uffd"];

/**
 * CRIU's side of TLS. Its server checks the client certificate's name
 * against its own --address unless told not to; lazyd checks the server's
 * name (an IP subjectAltName here) against its --address.
 */
function tlsServer(pki: Pki): string[] {
  return [
    "--tls",
    "--tls-cacert",
    pki.ca,
    "--tls-cert",
    pki.server,
    "--tls-key",
    pki.serverKey,
    "--tls-no-cn-verify",
  ];
}

function ps(port: number, address = "127.0.0.1"): string[] {
  return ["--page-server", "--address", address, "--port", String(port)];
}

/**
 * The migration most of these tests make: the images of `src` (a lazy
 * dump of `w` serving from `dir`/src) copied to `dir`/dst, lazyd there with
 * `args`, restore, every word verified, lazyd exiting 0, `check` on its
 * stats and log, then the source's dump exiting 0 once the session is
 * closed. On success `dir` is removed; on failure it is kept (and named)
 * and the dump stopped.
 */
async function migrate(
  w: Workload,
  src: LazyDump,
  o: {
    dir: string;
    args: string[];
    check?: (r: { stats: LazydStats; log: string }) => void;
  },
): Promise<void> {
  const dst = join(o.dir, "dst");
  try {
    await copyImages(join(o.dir, "src"), dst);
    const d = await startLazyd(dst, o.args);
    const pid = await restoreLazy(dst);
    await verifyRestored(w, pid);
    assert.equal((await d.result).code, 0, tail(join(dst, "lazyd.log")));
    o.check?.({
      stats: d.stats(),
      log: Deno.readTextFileSync(join(dst, "lazyd.log")),
    });
    const st = await src.result;
    assert.equal(st.code, 0, tail(join(o.dir, "src", "dump.log")));
    Deno.removeSync(o.dir, { recursive: true });
  } catch (e) {
    console.error(`kept ${o.dir}`);
    await src.stop();
    throw e;
  }
}

e2eTest(
  "criu dump --lazy-pages over loopback: every lazy page comes over the network",
  {
    needs: NEEDS,
  },
  async () => {
    const dir = scratch("remote");
    const w = await startWorkload(dir, {
      sizeMiB: 64,
      args: ["-c", "1", "-z"],
    });
    const src = await dumpLazy(w, join(dir, "src"));
    await migrate(w, src, {
      dir,
      args: ps(src.port),
      check: ({ stats }) => {
        const total = stats.processes.reduce(
          (a, p) => a + p.counters.totalPages,
          0,
        );
        assert.equal(stats.processes.length, 2);
        assert.equal(stats.source!.kind, "remote");
        assert.equal(stats.source!.remotePagesReceived, total);
        assert.deepEqual(stats.source!.bytesByFile, {}, "nothing read locally");
      },
    });
  },
);

e2eTest(
  "remote mode: fork, mremap, MADV_DONTNEED and munmap while pages are in flight",
  {
    needs: NEEDS,
  },
  async () => {
    const dir = scratch("remote-ev");
    const w = await startWorkload(dir, {
      sizeMiB: 64,
      args: ["-e", "-t", "2"],
    });
    const src = await dumpLazy(w, join(dir, "src"));
    // Pages move on faults only, so every event meets lazy memory, and
    // lazyd finishes when the processes exit.
    await migrate(w, src, {
      dir,
      args: [...ps(src.port), "--no-background"],
      check: ({ stats, log }) => {
        for (const ev of ["FORK", "REMAP", "REMOVE", "UNMAP"]) {
          assert.match(log, new RegExp(`: ${ev}: `), `lazyd saw ${ev}`);
        }
        assert.equal(stats.processes.length, 2, "the process and its fork");
        assert.ok(stats.processes.every((p) => p.end === "exited"));
        assert.ok(
          stats.processes[0].counters.droppedPages > 0,
          "removed and unmapped lazy pages were dropped, not fetched",
        );
      },
    });
  },
);

e2eTest("criu page-server --lazy-pages serving a normal dump", {
  needs: NEEDS,
}, async () => {
  const dir = scratch("pageserver");
  const w = await startWorkload(dir, { sizeMiB: 32 });
  await dump(w, join(dir, "src"));
  await copyImages(join(dir, "src"), join(dir, "dst"));
  const port = freePort();
  const server = new Deno.Command(CRIU, {
    args: [
      "page-server",
      "--lazy-pages",
      "--address",
      "127.0.0.1",
      "--port",
      String(port),
      "-D",
      join(dir, "src"),
      "-v4",
      "-o",
      "page-server.log",
    ],
    env: CRIU_ENV,
    stdout: "null",
    stderr: "piped",
  }).spawn();
  try {
    await waitFor("the page server to listen", async () => {
      const r = await run("ss", ["-Hltn", `sport = :${port}`]);
      return r.stdout.includes(String(port));
    }, { timeoutMs: 10_000 });
    const d = await startLazyd(join(dir, "dst"), ps(port));
    const pid = await restoreLazy(join(dir, "dst"));
    await verifyRestored(w, pid);
    assert.equal((await d.result).code, 0, tail(join(dir, "dst", "lazyd.log")));
    const stats = d.stats();
    assert.equal(
      stats.source!.remotePagesReceived,
      stats.processes[0].counters.totalPages,
    );
    assert.equal((await server.output()).code, 0);
    Deno.removeSync(dir, { recursive: true });
  } catch (e) {
    console.error(`kept ${dir}`);
    try {
      server.kill("SIGKILL");
    } catch { /* exited */ }
    throw e;
  }
});

e2eTest(
  "lost source: the page server killed half-way stops the restored process",
  {
    needs: NEEDS,
  },
  async () => {
    const dir = scratch("lost");
    const w = await startWorkload(dir, { sizeMiB: 256 });
    const src = await dumpLazy(w, join(dir, "src"));
    try {
      await copyImages(join(dir, "src"), join(dir, "dst"));
      // Small background requests, one at a time: the transfer takes long
      // enough to be cut in the middle.
      const d = await startLazyd(join(dir, "dst"), [
        ...ps(src.port),
        "--background-chunk",
        "1",
        "--background-inflight",
        "1",
      ]);
      const pid = await restoreLazy(join(dir, "dst"));
      Deno.kill(pid, "SIGUSR2"); // touch memory while the source dies
      await new Promise((r) => setTimeout(r, 100));
      src.proc.kill("SIGKILL");
      const r = await d.result;
      assert.equal(r.code, 1);
      const stats = d.stats();
      assert.equal(stats.processes[0].end, "failed");
      assert.match(stats.error!, /page server 127\.0\.0\.1:\d+/);
      await waitGone(pid);
      assert.ok(
        !w.lines().some((l) => l.startsWith("BAD")),
        "no zero page was read",
      );
      assert.ok(!w.lines().some((l) => l.startsWith("final ok")));
      Deno.removeSync(dir, { recursive: true });
    } catch (e) {
      console.error(`kept ${dir}`);
      throw e;
    } finally {
      await src.stop();
    }
  },
);

e2eTest("an unreachable page server fails lazyd before it listens", {
  needs: ["root"],
}, async () => {
  const dir = scratch("unreach");
  const { writeImageDir } = await import("../../src/images/mod.ts");
  writeImageDir(join(dir, "img"), {
    processes: [{
      pid: 1,
      vmas: [{ start: 0x10000, end: 0x20000 }],
      pagemap: [],
    }],
  });
  const port = freePort();
  const cmd = lazydCommand();
  const r = await run(cmd[0], [
    ...cmd.slice(1),
    "-D",
    join(dir, "img"),
    ...ps(port),
  ]);
  assert.equal(r.code, 1);
  assert.match(
    r.stderr,
    new RegExp(`cannot connect to 127\\.0\\.0\\.1 port ${port}`),
  );
  assert.throws(() => Deno.statSync(join(dir, "img", "lazy-pages.socket")));
  Deno.removeSync(dir, { recursive: true });
});

e2eTest("across two network namespaces joined by a veth pair", {
  needs: NEEDS,
}, async () => {
  const net = await makeVethPair();
  const dir = scratch("netns");
  try {
    const w = await startWorkload(dir, { sizeMiB: 64, args: ["-c", "1"] });
    const src = await dumpLazy(w, join(dir, "src"), { address: net.source });
    try {
      await copyImages(join(dir, "src"), join(dir, "dst"));
      // lazyd on the "destination host"; restore meets it on the socket
      // file, which network namespaces do not separate.
      const d = await startDaemon([
        ...net.exec,
        ...lazydCommand(),
        "-D",
        join(dir, "dst"),
        "-v4",
        "-o",
        "lazyd.log",
        ...ps(src.port, net.source),
      ], join(dir, "dst"));
      const pid = await restoreLazy(join(dir, "dst"));
      await verifyRestored(w, pid);
      assert.equal(
        (await d.result).code,
        0,
        tail(join(dir, "dst", "lazyd.log")),
      );
      assert.equal((await src.result).code, 0);
    } finally {
      await src.stop();
    }
    Deno.removeSync(dir, { recursive: true });
  } finally {
    await net.remove();
  }
});

e2eTest(
  "TLS: mutual X.509 with CRIU's page server (criu dump --lazy-pages --tls)",
  {
    needs: NEEDS,
  },
  async () => {
    assert.ok(haveOpenssl(), "openssl makes the test certificates");
    const pki = await makePki();
    const dir = scratch("tls");
    const w = await startWorkload(dir, { sizeMiB: 32 });
    const src = await dumpLazy(w, join(dir, "src"), {
      extra: tlsServer(pki),
    });
    await migrate(w, src, {
      dir,
      args: [
        ...ps(src.port),
        "--tls",
        "--tls-cacert",
        pki.ca,
        "--tls-cert",
        pki.client,
        "--tls-key",
        pki.clientKey,
      ],
      check: ({ stats }) =>
        assert.equal(
          stats.source!.remotePagesReceived,
          stats.processes[0].counters.totalPages,
        ),
    });
  },
);

e2eTest(
  "TLS: a server certificate from an unknown CA is refused before restore",
  {
    needs: NEEDS,
  },
  async () => {
    const pki = await makePki();
    const dir = scratch("tls-bad");
    const w = await startWorkload(dir, { sizeMiB: 8 });
    const src = await dumpLazy(w, join(dir, "src"), {
      extra: tlsServer(pki),
    });
    try {
      await copyImages(join(dir, "src"), join(dir, "dst"));
      const cmd = lazydCommand();
      const r = await run(cmd[0], [
        ...cmd.slice(1),
        "-D",
        join(dir, "dst"),
        ...ps(src.port),
        "--tls",
        "--tls-cacert",
        pki.otherCa,
        "--tls-cert",
        pki.client,
        "--tls-key",
        pki.clientKey,
      ]);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /page server 127\.0\.0\.1:\d+: .*not trusted/i);
      assert.throws(() => Deno.statSync(join(dir, "dst", "lazy-pages.socket")));
    } finally {
      await src.stop();
    }
    Deno.removeSync(dir, { recursive: true });
  },
);
