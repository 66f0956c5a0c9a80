/**
 * Migration scenarios that need a kernel with soft-dirty tracking and netem,
 * run INSIDE the guest of `scripts/vm/guest.ts` (they work on any host that
 * has both). Each prints one `VMRESULT {json}` line per run and exits 1 when
 * a run failed.
 *
 *   scenarios.ts precopy PERMILLE...   pre-dump, dirty PERMILLE/1000 of the
 *       pages, `criu dump --prev-images-dir ../1 --track-mem --lazy-pages`,
 *       `rsync -a` of cp/, lazyd --page-server in a second network namespace
 *       over a veth pair (169.254.83.1 -> .2), `criu restore --lazy-pages`
 *   scenarios.ts delay MS...            a 64 MiB lazy migration (no pre-dump)
 *       over the veth with netem delay MS one-way on both ends, once with
 *       `criu lazy-pages --page-server` and once with lazyd
 *
 * Options: --size MiB (default 32 for precopy, 64 for delay), --reps N
 * (delay runs per daemon, default 1), --lazyd-args A,B,... (extra lazyd
 * flags for the delay runs, comma-separated).
 *
 * The workload binary must have been built (tests/e2e/env.ts buildWorkload)
 * before the guest booted: the checkout is read-only in the guest.
 *
 * @module
 */

import { join } from "node:path";
import { inspect } from "../../src/inspect.ts";
import {
  CRIU,
  CRIU_ENV,
  dumpLazy,
  lazydCommand,
  type LazydStats,
  makeVethPair,
  restoreLazy,
  run,
  runOk,
  scratch,
  startDaemon,
  startWorkload,
  tail,
  verifyRestored,
  type VethPair,
  waitFor,
} from "../../tests/e2e/env.ts";

/** The page-server port of the example. */
const PORT = 27;

/** What one pre-copy run found. */
export interface PrecopyResult {
  scenario: "precopy";
  permille: number;
  sizeMiB: number;
  ok: boolean;
  error?: string;
  /** From `lazyd inspect` of cp/2, summed over processes. */
  lazyPages?: number;
  parentPages?: number;
  presentPages?: number;
  processes?: number;
  /** From lazyd's --stats-file. */
  remoteRequests?: number;
  remotePagesAsked?: number;
  remotePagesReceived?: number;
  bytesReadLocally?: Record<string, number>;
  lazydExit?: number;
  dumpExit?: number;
  verified?: boolean;
  /** Milliseconds: pre-dump, dump (until the page server listens), restore start to lazyd exit. */
  preDumpMs?: number;
  dumpMs?: number;
  transferMs?: number;
  /** Pages each dirty round rewrote, per process. */
  dirtied?: number[];
}

async function precopy(
  net: VethPair,
  permille: number,
  sizeMiB: number,
): Promise<PrecopyResult> {
  const res: PrecopyResult = {
    scenario: "precopy",
    permille,
    sizeMiB,
    ok: false,
  };
  const dir = scratch(`vm-precopy-${permille}`);
  const cp = join(dir, "src", "cp");
  const dst = join(dir, "dst");
  Deno.mkdirSync(cp, { recursive: true });
  Deno.mkdirSync(dst, { recursive: true });
  const w = await startWorkload(dir, {
    sizeMiB,
    args: ["-c", "1", "-p", String(permille)],
  });
  let src: Awaited<ReturnType<typeof dumpLazy>> | undefined;
  try {
    // source: criu pre-dump -D cp/1 -t PID
    Deno.mkdirSync(join(cp, "1"));
    let t = Date.now();
    await runOk(CRIU, [
      "pre-dump",
      "-D",
      join(cp, "1"),
      "-t",
      String(w.pid),
      "-v4",
      "-o",
      "pre-dump.log",
    ], { env: CRIU_ENV });
    res.preDumpMs = Date.now() - t;
    // the workload rewrites PERMILLE/1000 of its pages (root and child)
    Deno.kill(w.pid, "SIGUSR1");
    await waitFor(
      "the dirty round",
      () => w.lines().filter((l) => l.startsWith("dirty round=1")).length >= 2,
      {
        timeoutMs: 120_000,
      },
    );
    res.dirtied = w.lines().filter((l) => l.startsWith("dirty round=1"))
      .map((l) => Number(l.match(/pages=(\d+)/)?.[1]));
    // source: criu dump -D cp/2 -t PID --prev-images-dir ../1 --track-mem
    //         --lazy-pages --port 27
    t = Date.now();
    src = await dumpLazy(w, join(cp, "2"), {
      port: PORT,
      address: net.source,
      extra: ["--prev-images-dir", "../1", "--track-mem"],
    });
    res.dumpMs = Date.now() - t;
    // copy cp/ to the destination
    await runOk("rsync", ["-a", cp, dst]);
    const img = join(dst, "cp", "2");
    const report = inspect(img);
    if (report.problems.length) {
      throw new Error(`lazyd inspect: ${report.problems.join("; ")}`);
    }
    res.processes = report.processes.length;
    res.lazyPages = report.processes.reduce((a, p) => a + p.lazyPages, 0);
    res.parentPages = report.processes.reduce((a, p) => a + p.parentPages, 0);
    res.presentPages = report.processes.reduce(
      (a, p) => a + p.presentPages,
      0,
    );
    // destination: lazyd --page-server --address SOURCE --port 27 -D cp/2 &
    //              criu restore --lazy-pages -D cp/2
    const stats = join(img, "stats.json");
    const d = await startDaemon([
      ...net.exec,
      ...lazydCommand(),
      "--page-server",
      "--address",
      net.source,
      "--port",
      String(PORT),
      "-D",
      img,
      "-v4",
      "-o",
      "lazyd.log",
      "--stats-file",
      stats,
    ], img);
    t = Date.now();
    const pid = await restoreLazy(img);
    const out = await d.result;
    res.transferMs = Date.now() - t;
    res.lazydExit = out.code;
    if (out.code !== 0) {
      throw new Error(
        `lazyd exited ${out.code}: ${tail(join(img, "lazyd.log"))}`,
      );
    }
    await verifyRestored(w, pid);
    res.verified = true;
    const s: LazydStats = JSON.parse(Deno.readTextFileSync(stats));
    res.remoteRequests = s.source?.remoteRequests;
    res.remotePagesAsked = s.source?.remotePages;
    res.remotePagesReceived = s.source?.remotePagesReceived;
    res.bytesReadLocally = s.source?.bytesByFile;
    res.dumpExit = (await src.result).code;
    src = undefined;
    res.ok = res.dumpExit === 0 && res.parentPages > 0 &&
      res.lazyPages > 0 &&
      res.remotePagesReceived === res.lazyPages &&
      res.remotePagesAsked === res.lazyPages;
    if (!res.ok) res.error = "page counts do not match (see the numbers)";
    Deno.removeSync(dir, { recursive: true });
  } catch (e) {
    res.error = e instanceof Error ? e.message : String(e);
    console.error(`kept ${dir}`);
  } finally {
    await src?.stop();
    await w.kill();
  }
  return res;
}

/** What one delayed lazy migration measured. */
export interface DelayResult {
  scenario: "delay";
  daemon: "criu" | "lazyd";
  delayMs: number;
  sizeMiB: number;
  ok: boolean;
  error?: string;
  /** Restore start to daemon exit, milliseconds. */
  transferMs?: number;
  /** Restore start to `criu restore -d` returning. */
  restoreMs?: number;
  verified?: boolean;
}

async function ifaceWith(addr: string, ns?: string): Promise<string> {
  const r = await runOk("ip", [
    ...(ns ? ["-n", ns] : []),
    "-o",
    "addr",
    "show",
    "to",
    addr,
  ]);
  const name = r.stdout.trim().split(/\s+/)[1];
  if (!name) throw new Error(`no interface has ${addr}`);
  return name.replace(/@.*/, "");
}

async function setDelay(net: VethPair, ms: number): Promise<void> {
  const a = await ifaceWith(net.source);
  const b = await ifaceWith(net.destination, net.ns);
  const q = ms > 0
    ? ["root", "netem", "delay", `${ms}ms`, "limit", "100000"]
    : ["root", "pfifo_fast"];
  await run("tc", ["qdisc", "del", "dev", a, "root"]);
  await run("tc", ["-n", net.ns, "qdisc", "del", "dev", b, "root"]);
  if (ms > 0) {
    await runOk("tc", ["qdisc", "add", "dev", a, ...q]);
    await runOk("tc", ["-n", net.ns, "qdisc", "add", "dev", b, ...q]);
  }
}

async function delayed(
  net: VethPair,
  daemon: "criu" | "lazyd",
  delayMs: number,
  sizeMiB: number,
  lazydArgs: string[],
): Promise<DelayResult> {
  const res: DelayResult = {
    scenario: "delay",
    daemon,
    delayMs,
    sizeMiB,
    ok: false,
  };
  const dir = scratch(`vm-delay-${daemon}-${delayMs}`);
  const w = await startWorkload(dir, { sizeMiB });
  let src: Awaited<ReturnType<typeof dumpLazy>> | undefined;
  try {
    src = await dumpLazy(w, join(dir, "src"), {
      port: PORT,
      address: net.source,
    });
    await runOk("rsync", ["-a", `${join(dir, "src")}/`, join(dir, "dst")]);
    const img = join(dir, "dst");
    const ps = [
      "--page-server",
      "--address",
      net.source,
      "--port",
      String(PORT),
    ];
    const cmd = daemon === "criu"
      ? [
        "env",
        "CRIU_FAULT=130",
        CRIU,
        "lazy-pages",
        ...ps,
        "-D",
        img,
        "-v4",
        "-o",
        "lazy-pages.log",
      ]
      : [
        ...lazydCommand(),
        ...ps,
        "-D",
        img,
        "-v4",
        "-o",
        "lazyd.log",
        ...lazydArgs,
      ];
    const d = await startDaemon([...net.exec, ...cmd], img);
    const t = Date.now();
    const pid = await restoreLazy(img);
    res.restoreMs = Date.now() - t;
    const out = await d.result;
    res.transferMs = Date.now() - t;
    if (out.code !== 0) {
      throw new Error(
        `${daemon} exited ${out.code}: ${
          tail(join(img, daemon === "criu" ? "lazy-pages.log" : "lazyd.log"))
        }`,
      );
    }
    await verifyRestored(w, pid);
    res.verified = true;
    const st = await src.result;
    src = undefined;
    res.ok = st.code === 0;
    if (!res.ok) res.error = `criu dump exited ${st.code}`;
    Deno.removeSync(dir, { recursive: true });
  } catch (e) {
    res.error = e instanceof Error ? e.message : String(e);
    console.error(`kept ${dir}`);
  } finally {
    await src?.stop();
    await w.kill();
  }
  return res;
}

if (import.meta.main) {
  const args = [...Deno.args];
  const mode = args.shift();
  let size: number | undefined;
  let reps = 1;
  let lazydArgs: string[] = [];
  const values: number[] = [];
  while (args.length) {
    const a = args.shift()!;
    if (a === "--size") size = Number(args.shift());
    else if (a === "--reps") reps = Number(args.shift());
    else if (a === "--lazyd-args") {
      lazydArgs = args.shift()!.split(",").filter(Boolean);
    } else values.push(Number(a));
  }
  if ((mode !== "precopy" && mode !== "delay") || values.some(isNaN)) {
    console.error(
      "usage: scenarios.ts (precopy PERMILLE...|delay MS...) [--size MiB] [--reps N]",
    );
    Deno.exit(2);
  }
  const net = await makeVethPair();
  let failed = false;
  try {
    for (const v of values) {
      if (mode === "precopy") {
        const r = await precopy(net, v, size ?? 32);
        console.log(`VMRESULT ${JSON.stringify(r)}`);
        failed ||= !r.ok;
      } else {
        await setDelay(net, v);
        for (let i = 0; i < reps; i++) {
          for (const daemon of ["criu", "lazyd"] as const) {
            const r = await delayed(net, daemon, v, size ?? 64, lazydArgs);
            console.log(`VMRESULT ${JSON.stringify(r)}`);
            failed ||= !r.ok;
          }
        }
      }
    }
  } finally {
    await net.remove();
  }
  Deno.exit(failed ? 1 : 0);
}
