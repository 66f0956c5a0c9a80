/**
 * One measured lazy restore for `deno task bench` (scripts/bench.ts): a
 * daemon serves a fresh copy of a dump to `criu restore --lazy-pages`, the
 * restored workload runs its timed first pass, and the daemon's CPU time
 * and peak RSS come from `/usr/bin/time`. Also the two references: a plain
 * (non-lazy) restore, and a daemon that is started and stopped idle.
 *
 * Also holds the bench's cleanup registry: everything started or created
 * here is undone on error, on SIGINT/SIGTERM and at exit.
 *
 * @module
 */

import { join } from "node:path";
import {
  copyImages,
  type Daemon,
  restoreLazy,
  runOk,
  tail,
  waitFor,
  type Workload,
} from "../../tests/e2e/env.ts";

/** GNU time, from Debian's `time` package. */
export const TIME = "/usr/bin/time";

/**
 * Which daemon serves the pages; "plain" is the reference without one: a
 * plain `criu restore` that loads every page before the process runs.
 */
export type DaemonKind = "criu" | "lazyd" | "plain";

/** What one run measured. */
export interface RunResult {
  daemon: DaemonKind;
  rep: number;
  /**
   * Seconds from the start of `criu restore` to the daemon's exit ("plain":
   * the restore's duration).
   */
  transferS: number;
  /** Seconds `criu restore --lazy-pages -d` took. */
  restoreS: number;
  /** Seconds from the end of the restore to the daemon's exit. */
  drainS: number;
  /** The workload's first full pass (its `pass_ms`), in milliseconds. */
  passMs: number;
  /** First-touch latency of the pass, microseconds. */
  p50Us: number;
  p99Us: number;
  maxUs: number;
  /** Daemon CPU seconds (user + system) and their parts (NaN for "plain"). */
  cpuS: number;
  userS: number;
  sysS: number;
  /** Daemon peak RSS (GNU time's %M), MiB. */
  maxRssMiB: number;
  /** Daemon wall time from its start (including runtime start-up), seconds. */
  daemonWallS: number;
  /** lazyd's --stats-file, when the daemon is lazyd. */
  lazydStats?: unknown;
  /**
   * Remote mode: seconds from the end of `criu restore` until the restored
   * process held all its memory (its RssAnon, sampled every few ms, first
   * within a small slack of its final value): the last page's arrival,
   * measured the same way for both daemons. NaN when not sampled.
   */
  lastPageS?: number;
  /** Remote mode: seconds from the start of `criu restore` to the source dump's exit. */
  sourceExitS?: number;
  /**
   * lazyd only: seconds from restore's "restore finished" message to
   * lazyd's exit, by lazyd's own clock (stats totalMs - restoreFinishedMs).
   */
  lazydDrainS?: number;
  /** Which lazyd variant ran (extra arguments), when not the base one. */
  variant?: string;
  /** The restored workload's log lines. */
  workloadLines: string[];
}

// ---------------------------------------------------------------------------
// Cleanup registry

const cleanups = new Set<() => void | Promise<void>>();

/** Registers an undo action; call the returned function once it is done. */
export function onCleanup(fn: () => void | Promise<void>): () => void {
  cleanups.add(fn);
  return () => cleanups.delete(fn);
}

/** Runs every registered undo action, newest first. Never throws. */
export async function cleanupAll(): Promise<void> {
  const fns = [...cleanups].reverse();
  cleanups.clear();
  for (const fn of fns) {
    try {
      await fn();
    } catch (e) {
      console.error(`bench: cleanup: ${(e as Error).message}`);
    }
  }
}

/** Sends SIGKILL to `pid` if it still exists. */
export function killPid(pid: number): void {
  try {
    Deno.kill(pid, "SIGKILL");
  } catch { /* already gone */ }
}

/**
 * Kills, by pid, every process whose command line names `dir` (the bench's
 * private scratch directory, unique to this run): a restore, daemon, copy
 * or restored workload that was in flight when the bench was interrupted.
 */
export function killUnder(dir: string): void {
  for (const e of Deno.readDirSync("/proc")) {
    const pid = Number(e.name);
    if (!Number.isInteger(pid) || pid === Deno.pid) continue;
    try {
      const cmd = Deno.readTextFileSync(`/proc/${pid}/cmdline`);
      if (cmd.split("\0").some((a) => a.includes(dir))) killPid(pid);
    } catch { /* gone */ }
  }
}

/** Whether `pid` exists and is not a zombie. */
export function alive(pid: number): boolean {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    return stat.slice(stat.lastIndexOf(")") + 2)[0] !== "Z";
  } catch {
    return false;
  }
}

function childrenOf(pid: number): number[] {
  const out: number[] = [];
  try {
    for (const t of Deno.readDirSync(`/proc/${pid}/task`)) {
      const s = Deno.readTextFileSync(`/proc/${pid}/task/${t.name}/children`);
      out.push(...s.trim().split(/\s+/).filter(Boolean).map(Number));
    }
  } catch { /* gone */ }
  return out;
}

/**
 * Kills a daemon started under /usr/bin/time that has not exited yet (its
 * pid is still ours, unreaped): the daemon first, then time itself.
 */
async function killDaemon(d: Daemon, exited: boolean): Promise<void> {
  if (!exited) {
    for (const c of childrenOf(d.proc.pid)) killPid(c);
    killPid(d.proc.pid);
  }
  await d.result.catch(() => undefined);
}

/** Kills `pid` only while it still runs `exe` (the pid may have been reused). */
function killIfExe(pid: number, exe: string): void {
  try {
    if (Deno.readLinkSync(`/proc/${pid}/exe`) === exe) killPid(pid);
  } catch { /* gone */ }
}

// ---------------------------------------------------------------------------
// One run

/** Options of {@linkcode runOnce}. */
export interface RunOptions {
  daemon: DaemonKind;
  rep: number;
  /** The daemon's command without `-D` and its run-specific options. */
  command: string[];
  /** The dump to restore (copied first, never modified). */
  dumpDir: string;
  /** The scratch directory runs are made in. */
  scratch: string;
  /** The dumped workload (its log is where the restored copy writes). */
  workload: Workload;
  /** The workload's executable (to recognise the restored process). */
  workloadExe: string;
  /** The workload log's content at dump time. */
  dumpLog: string;
  /** Longest wait for the workload's verdict and the daemon's exit. */
  timeoutMs: number;
  /** Label of a lazyd variant (its extra arguments), for the results. */
  variant?: string;
  /** Remote mode: the page server the daemon fetches from. */
  remote?: RemoteSource;
  /**
   * Start the workload's pass only once the daemon exited (its transfer
   * then has the machine to itself); the pass figures are then those of
   * memory already in place.
   */
  passAfter?: boolean;
}

/** The source side of a remote run: a `criu dump --lazy-pages` serving. */
export interface RemoteSource {
  /** Daemon arguments: `--page-server --address A --port P`. */
  daemonArgs: string[];
  /** Resolves once the source dump exited: its status and performance.now(). */
  exited: Promise<{ code: number; at: number }>;
  /** Size of the workload's buffer (for the last-page slack). */
  sizeMiB: number;
}

/** RssAnon samples of one process: [performance.now(), KiB]. */
interface RssSampler {
  /** Stops sampling; returns the samples. */
  stop(): Promise<[number, number][]>;
}

/**
 * Samples `pid`'s RssAnon every `everyMs` until stopped or the process is
 * gone. Reading /proc/PID/status takes no mmap lock and costs some tens of
 * microseconds, the same for either daemon.
 */
function sampleRss(pid: number, everyMs = 2): RssSampler {
  const samples: [number, number][] = [];
  let stopped = false;
  const loop = (async () => {
    while (!stopped) {
      let text: string;
      try {
        text = Deno.readTextFileSync(`/proc/${pid}/status`);
      } catch {
        return;
      }
      const m = text.match(/^RssAnon:\s+(\d+)/m);
      if (!m) return; // a zombie has no memory left
      samples.push([performance.now(), Number(m[1])]);
      await new Promise((r) => setTimeout(r, everyMs));
    }
  })();
  return {
    stop: async () => {
      stopped = true;
      await loop;
      return samples;
    },
  };
}

/**
 * When the last lazy page arrived: the first sample within `slackKiB` of
 * the largest. The slack covers what the workload itself allocates during
 * its pass (its latency and order arrays, 16 bytes a page, and some
 * more), which may come after the last page.
 */
function lastPageAt(
  samples: [number, number][],
  sizeMiB: number,
): number {
  if (!samples.length) return NaN;
  const max = Math.max(...samples.map((s) => s[1]));
  if (max < sizeMiB * 1024) return NaN; // never saw the whole buffer
  const slackKiB = (16 * sizeMiB * 256) / 1024 + 1024;
  return samples.find((s) => s[1] >= max - slackKiB)![0];
}

/** GNU time's output for "%e %U %S %M" (the last line; earlier lines report signals). */
function parseTime(file: string): {
  wall: number;
  user: number;
  sys: number;
  rssKiB: number;
} {
  const text = Deno.readTextFileSync(file).trim().split("\n");
  const f = text[text.length - 1].trim().split(/\s+/).map(Number);
  if (f.length !== 4 || f.some((x) => !Number.isFinite(x))) {
    throw new Error(`cannot parse ${file}: ${text.join(" | ")}`);
  }
  return { wall: f[0], user: f[1], sys: f[2], rssKiB: f[3] };
}

function num(lines: string[], re: RegExp, what: string): number {
  for (const l of lines) {
    const m = l.match(re);
    if (m) return Number(m[1]);
  }
  throw new Error(`the workload logged no ${what}:\n${lines.join("\n")}`);
}

/** A daemon running under /usr/bin/time. */
interface Launched {
  /** Resolves once the daemon (and time) exited. */
  done: Promise<void>;
  /** Exit status once exited, else undefined. */
  code(): number | undefined;
  /** performance.now() at the exit. */
  exitAt(): number;
  /** The daemon's stderr, once exited. */
  stderr(): string;
  /** Sends `sig` to the daemon (not to time) unless it already exited. */
  signal(sig: Deno.Signal): void;
  /** Kills it unless it already exited; waits for the exit. */
  kill(): Promise<void>;
}

/**
 * Starts `command -D dir -o dir/lazy-pages.log [extra]` under GNU time and
 * waits until it listens on dir/lazy-pages.socket (like env.ts's
 * startDaemon, but the handle is ours before the wait, so a daemon that
 * never listens is killed too). The caller must call `kill()` eventually.
 */
async function launch(
  o: { daemon: DaemonKind; command: string[]; extra?: string[] },
  dir: string,
): Promise<Launched> {
  const cmd = [
    TIME,
    "-f",
    "%e %U %S %M",
    "-o",
    join(dir, "time.txt"),
    ...o.command,
    "-D",
    dir,
    "-o",
    join(dir, "lazy-pages.log"),
    ...(o.extra ?? []),
  ];
  const proc = new Deno.Command(cmd[0], {
    args: cmd.slice(1),
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const daemon: Daemon = { proc, result: proc.output() };
  let code: number | undefined;
  let exitAt = 0;
  let stderr = "";
  const done = daemon.result.then((r) => {
    exitAt = performance.now();
    code = r.code;
    stderr = new TextDecoder().decode(r.stderr).trim();
  }, () => {
    exitAt = performance.now();
    code = -1;
  });
  const l: Launched = {
    done,
    code: () => code,
    exitAt: () => exitAt,
    stderr: () => stderr,
    signal: (sig) => {
      if (code !== undefined) return;
      for (const c of childrenOf(proc.pid)) {
        try {
          Deno.kill(c, sig);
        } catch { /* gone */ }
      }
    },
    kill: async () => {
      await killDaemon(daemon, code !== undefined);
      await done;
    },
  };
  const sock = join(dir, "lazy-pages.socket");
  try {
    await waitFor(`${o.daemon} to listen on ${sock}`, () => {
      if (code !== undefined) {
        throw new Error(`${o.daemon} exited ${code} before listening`);
      }
      try {
        return Deno.statSync(sock).isSocket === true;
      } catch {
        return false;
      }
    }, { timeoutMs: 60_000 });
  } catch (e) {
    await l.kill();
    const err = stderr ? `\n--- daemon stderr\n${stderr}` : "";
    throw new Error(`${(e as Error).message}${err}`);
  }
  return l;
}

/** A fresh copy of the dump in `dir`, written back to disk. */
async function freshCopy(dumpDir: string, dir: string): Promise<void> {
  await copyImages(dumpDir, dir);
  // Write the copy back now, not while a daemon reads it.
  await runOk("sync", ["-f", dir]);
}

/** What an idle daemon costs: started, listening, then SIGTERM. */
export interface IdleResult {
  daemon: DaemonKind;
  cpuS: number;
  maxRssMiB: number;
  /** Seconds from the start until it listened. */
  startS: number;
}

/**
 * Starts the daemon on a copy of the dump, waits until it listens, stops it
 * with SIGTERM: its runtime and start-up cost, without any paging.
 */
export async function idleRun(
  o: {
    daemon: DaemonKind;
    command: string[];
    dumpDir: string;
    scratch: string;
  },
): Promise<IdleResult> {
  const dir = join(o.scratch, `idle-${o.daemon}`);
  const removeDir = () => Deno.remove(dir, { recursive: true }).catch(() => {});
  const undoDir = onCleanup(removeDir);
  let d: Launched | undefined;
  const undoProc = onCleanup(() => d?.kill());
  try {
    await freshCopy(o.dumpDir, dir);
    const t0 = performance.now();
    d = await launch(o, dir);
    const startS = (performance.now() - t0) / 1000;
    d.signal("SIGTERM");
    await Promise.race([d.done, new Promise((r) => setTimeout(r, 10_000))]);
    await d.kill();
    const t = parseTime(join(dir, "time.txt"));
    return {
      daemon: o.daemon,
      cpuS: t.user + t.sys,
      maxRssMiB: t.rssKiB / 1024,
      startS,
    };
  } finally {
    await d?.kill();
    undoProc();
    await removeDir();
    undoDir();
  }
}

/**
 * Copies the dump to a fresh directory, starts the daemon there under
 * /usr/bin/time, restores, sends SIGUSR2 as soon as restore returns, and
 * waits for the workload's verdict and the daemon's exit. Throws (after
 * printing the daemon's and restore's log tails) when anything fails,
 * verification included. Daemon "plain" restores without lazy pages.
 */
export async function runOnce(o: RunOptions): Promise<RunResult> {
  const dir = join(o.scratch, `run-${o.daemon}-${o.rep}`);
  const removeDir = () => Deno.remove(dir, { recursive: true }).catch(() => {});
  const undoDir = onCleanup(removeDir);
  const lazy = o.daemon !== "plain";
  let d: Launched | undefined;
  let restored = 0;
  const stop = async () => {
    if (restored) killIfExe(restored, o.workloadExe);
    restored = 0;
    await d?.kill();
  };
  const undoProcs = onCleanup(stop);
  const statsFile = join(dir, "stats.json");
  let sampler: RssSampler | undefined;
  try {
    await freshCopy(o.dumpDir, dir);
    // The restored workload appends to the original log: give every run
    // the same file CRIU saw at dump time.
    Deno.writeTextFileSync(o.workload.log, o.dumpLog);
    const before = o.dumpLog.split("\n").filter(Boolean).length;
    const lines = () => o.workload.lines().slice(before);

    if (lazy) {
      d = await launch({
        daemon: o.daemon,
        command: o.command,
        extra: [
          ...(o.remote?.daemonArgs ?? []),
          ...(o.daemon === "lazyd" ? ["--stats-file", statsFile] : []),
        ],
      }, dir);
    }
    const code = () => d ? d.code() : 0;

    const t0 = performance.now();
    restored = await restoreLazy(dir, { lazy });
    const restoreEnd = performance.now();
    const restoreS = (restoreEnd - t0) / 1000;
    const deadline = { timeoutMs: o.timeoutMs };
    if (o.passAfter) {
      sampler = o.remote ? sampleRss(restored) : undefined;
      await waitFor(
        `${o.daemon} to exit`,
        () => code() !== undefined,
        deadline,
      );
      Deno.kill(restored, "SIGUSR2");
    } else {
      Deno.kill(restored, "SIGUSR2");
      sampler = o.remote ? sampleRss(restored) : undefined;
    }

    await waitFor("the restored workload's verdict", () => {
      const c = code();
      if (c !== undefined && c !== 0) {
        throw new Error(`${o.daemon} exited ${c} during the run`);
      }
      return lines().some((l) => /^exit \d+ pid=1\b/.test(l));
    }, deadline);
    await waitFor(`${o.daemon} to exit`, () => code() !== undefined, deadline);
    const samples = await sampler?.stop();
    sampler = undefined;
    const l = lines();
    if (
      l.some((x) => x.startsWith("BAD")) ||
      !l.some((x) => /^exit 0 pid=1\b/.test(x))
    ) {
      throw new Error(`MEMORY VERIFICATION FAILED:\n${l.join("\n")}`);
    }
    if (code() !== 0) throw new Error(`${o.daemon} exited ${code()}`);
    let sourceExitS: number | undefined;
    if (o.remote) {
      // The source's dump ends once the daemon closed the session.
      let timer: ReturnType<typeof setTimeout> | undefined;
      const src = await Promise.race([
        o.remote.exited,
        new Promise<undefined>((r) => {
          timer = setTimeout(() => r(undefined), 30_000);
        }),
      ]);
      clearTimeout(timer);
      if (!src) throw new Error("the source dump did not exit");
      if (src.code !== 0) {
        throw new Error(`the source dump exited ${src.code}`);
      }
      sourceExitS = (src.at - t0) / 1000;
    }
    // The restored tree must be gone before the next run starts.
    await waitFor("the restored workload to exit", () => !alive(restored), {
      timeoutMs: 30_000,
    });
    restored = 0;

    const transferS = d ? (d.exitAt() - t0) / 1000 : restoreS;
    const t = d
      ? parseTime(join(dir, "time.txt"))
      : { wall: NaN, user: NaN, sys: NaN, rssKiB: NaN };
    let lazydStats: unknown;
    if (o.daemon === "lazyd") {
      try {
        lazydStats = JSON.parse(Deno.readTextFileSync(statsFile));
      } catch { /* reported as missing */ }
    }
    const st = lazydStats as
      | { totalMs?: number; restoreFinishedMs?: number }
      | undefined;
    const extra: Partial<RunResult> = {};
    if (o.variant !== undefined) extra.variant = o.variant;
    if (o.remote) {
      extra.lastPageS = (lastPageAt(samples ?? [], o.remote.sizeMiB) -
        restoreEnd) / 1000;
      extra.sourceExitS = sourceExitS;
    }
    if (st?.totalMs !== undefined && st.restoreFinishedMs !== undefined) {
      extra.lazydDrainS = (st.totalMs - st.restoreFinishedMs) / 1000;
    }
    return {
      ...extra,
      daemon: o.daemon,
      rep: o.rep,
      transferS,
      restoreS,
      drainS: transferS - restoreS,
      passMs: num(l, /^final ok pid=1 pass_ms=([\d.]+)/, "pass_ms"),
      p50Us: num(l, /^latency .*\bp50_us=([\d.]+)/, "p50_us"),
      p99Us: num(l, /^latency .*\bp99_us=([\d.]+)/, "p99_us"),
      maxUs: num(l, /^latency .*\bmax_us=([\d.]+)/, "max_us"),
      cpuS: t.user + t.sys,
      userS: t.user,
      sysS: t.sys,
      maxRssMiB: t.rssKiB / 1024,
      daemonWallS: t.wall,
      lazydStats,
      workloadLines: l,
    };
  } catch (e) {
    await sampler?.stop();
    await stop(); // so that the daemon's stderr is in
    const log = join(dir, "lazy-pages.log");
    console.error(
      `\n!!! ${o.daemon} run ${o.rep + 1} failed: ${(e as Error).message}\n` +
        (lazy ? `--- ${log} (tail)\n${tail(log)}\n` : "") +
        (d?.stderr() ? `--- daemon stderr\n${d.stderr()}\n` : "") +
        `--- ${join(dir, "restore.log")} (tail)\n${
          tail(join(dir, "restore.log"))
        }\n`,
    );
    throw e;
  } finally {
    await stop();
    undoProcs();
    await removeDir();
    undoDir();
  }
}
