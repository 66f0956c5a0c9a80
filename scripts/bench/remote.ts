/**
 * One measured lazy migration for `deno task bench --mode remote`
 * (scripts/bench.ts): a fresh workload is dumped with
 * `criu dump --lazy-pages`, whose page server keeps the memory on the
 * source side and serves ONE session; the images are copied, the daemon
 * (`criu lazy-pages --page-server` or lazyd with the same flags) fetches
 * every page from it over the loopback while the restored workload runs its
 * timed first pass. So every run, of either daemon, has a dump of its own.
 *
 * @module
 */

import { join } from "node:path";
import {
  dumpLazy,
  startWorkload,
  tail,
  type Workload,
} from "../../tests/e2e/env.ts";
import {
  type DaemonKind,
  onCleanup,
  type RemoteSource,
  runOnce,
  type RunResult,
} from "./run.ts";

/** A serving `criu dump --lazy-pages`. */
interface LazyDump extends RemoteSource {
  /** Kills the dump unless it exited; waits for it. */
  kill(): Promise<void>;
}

/**
 * `criu dump --lazy-pages --address 127.0.0.1 --port PORT` of `w` into
 * `dir`, serving once CRIU reports through --status-fd that its page server
 * listens; at CRIU's default log level, because the page server's
 * per-request debug lines (-v4) would tax the daemon that sends more
 * requests.
 */
async function lazyDump(
  w: Workload,
  dir: string,
  sizeMiB: number,
): Promise<LazyDump> {
  const d = await dumpLazy(w, dir, { logLevel: 2 });
  let code: number | undefined;
  const exited = d.result.then(
    (r) => ({ code: code = r.code, at: performance.now() }),
    () => ({ code: code = -1, at: performance.now() }),
  );
  return {
    daemonArgs: [
      "--page-server",
      "--address",
      "127.0.0.1",
      "--port",
      String(d.port),
    ],
    exited,
    sizeMiB,
    kill: async () => {
      if (code === undefined) {
        try {
          d.proc.kill("SIGKILL");
        } catch { /* exited */ }
      }
      await exited;
    },
  };
}

/** Options of {@linkcode runRemote}. */
export interface RemoteRunOptions {
  daemon: DaemonKind;
  rep: number;
  /** The daemon's command without `-D`, the page-server flags and the log. */
  command: string[];
  /** lazyd variant label, if any. */
  variant?: string;
  /** Directory this run works in (removed at the end). */
  scratch: string;
  sizeMiB: number;
  /** Workload flags (-l, -r). */
  workloadArgs: string[];
  /** Signal the final pass only after the daemon exited. */
  passAfter?: boolean;
  /** The workload's executable. */
  workloadExe: string;
  timeoutMs: number;
}

/**
 * Starts a workload, dumps it lazily, and runs one lazy migration of it
 * with {@linkcode runOnce} (restore start -> daemon exit is the transfer).
 * The source dump must exit 0 once the daemon closed the session.
 */
export async function runRemote(o: RemoteRunOptions): Promise<RunResult> {
  const base = o.scratch;
  const wlDir = join(base, "workload");
  const srcDir = join(base, "src");
  await Deno.mkdir(wlDir, { recursive: true });
  const removeBase = () =>
    Deno.remove(base, { recursive: true }).catch(() => {});
  const undoBase = onCleanup(removeBase);
  let w: Workload | undefined;
  let src: LazyDump | undefined;
  const stop = async () => {
    await src?.kill();
    await w?.kill();
  };
  const undoProcs = onCleanup(stop);
  try {
    w = await startWorkload(wlDir, {
      sizeMiB: o.sizeMiB,
      args: o.workloadArgs,
    });
    src = await lazyDump(w, srcDir, o.sizeMiB);
    const dumpLog = await Deno.readTextFile(w.log);
    return await runOnce({
      daemon: o.daemon,
      rep: o.rep,
      command: o.command,
      variant: o.variant,
      dumpDir: srcDir,
      scratch: base,
      workload: w,
      workloadExe: o.workloadExe,
      dumpLog,
      timeoutMs: o.timeoutMs,
      passAfter: o.passAfter,
      remote: src,
    });
  } catch (e) {
    if (src) {
      console.error(
        `--- ${join(srcDir, "dump.log")} (tail)\n${
          tail(join(srcDir, "dump.log"))
        }`,
      );
    }
    throw e;
  } finally {
    await stop();
    undoProcs();
    await removeBase();
    undoBase();
  }
}
