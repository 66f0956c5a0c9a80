/**
 * The lazy-pages daemon: `lazyd -D DIR` in place of `criu lazy-pages -D DIR`.
 *
 * {@linkcode serve} starts the uffd worker and turns SIGTERM/SIGINT into
 * requests to it: the first asks it to finish delivering and exit, the
 * second to stop the processes that are not complete and exit non-zero.
 *
 * @module
 */
import { closeFd, EFD, eventfd, eventfdWrite } from "../../ffi/mod.ts";
import { Logger, now } from "./log.ts";
import type { RuntimeConfig } from "./runtime.ts";
import type { WorkerReport } from "./worker.ts";

export { DEFAULT_PAGER_OPTIONS, type PagerOptions } from "./pager.ts";

/**
 * Background bytes asked for and not yet received, in page-server mode:
 * enough that CRIU's server always has the next request at hand (it serves
 * one at a time and idles between them), and no more than CRIU's own
 * daemon can put ahead of a fault's reply on the one TCP stream (its 4 MiB
 * background request). With 512 KiB requests, 2, 4, 8 and 16 MiB moved a
 * GiB equally fast here (`deno task bench --mode remote --access idle
 * --variants "--background-inflight 512;..."`).
 */
export const DEFAULT_BACKGROUND_INFLIGHT = 4 << 20;

/**
 * Bytes per background request in page-server mode. A reply is received
 * whole, then copied in: at 512 KiB it is still in the cache when
 * UFFDIO_COPY reads it, where 2 MiB (the local-mode chunk) is not; smaller
 * requests also keep more of them in flight. Measured with `deno task
 * bench --mode remote --access idle --ceiling`: 15% less transfer time
 * than 2 MiB, within 10-15% of a bare C client (scripts/bench/ceiling.c).
 */
export const DEFAULT_REMOTE_BACKGROUND_CHUNK = 128 * 4096;
export { RESTORE_FINISHED, type RuntimeConfig, type Stats } from "./runtime.ts";
export { inWorker, workerMain } from "./worker.ts";

/** {@linkcode serve}'s options: the runtime's, minus what serve provides. */
export type ServeOptions = Omit<RuntimeConfig, "controlFd" | "logOrigin"> & {
  /** Module that runs `workerMain()` when loaded in a worker (the entry module). */
  workerModule: string | URL;
};

/** Runs the daemon until it is done; resolves with the exit code. */
export async function serve(options: ServeOptions): Promise<number> {
  const { workerModule, ...rest } = options;
  const controlFd = eventfd(0, EFD.CLOEXEC | EFD.NONBLOCK);
  const logOrigin = now();
  const worker = new Worker(workerModule, { type: "module" });
  let phase = "starting";
  const { promise, resolve } = Promise.withResolvers<number>();
  const onSignal = () => {
    if (phase !== "serving") {
      // Restore has not handed everything over yet (or not connected): no
      // restored process runs, and if restore is still going it fails and
      // kills its tree once we are gone. Nothing to finish or to protect.
      try {
        Deno.removeSync(`${rest.workDir}/lazy-pages.socket`);
      } catch { /* not there */ }
      resolve(1);
      return;
    }
    eventfdWrite(controlFd, 1);
  };
  const sigs: Deno.Signal[] = ["SIGTERM", "SIGINT"];
  for (const s of sigs) Deno.addSignalListener(s, onSignal);
  worker.onmessage = (e: MessageEvent<WorkerReport>) => {
    if (e.data.type === "phase") phase = e.data.phase;
    else resolve(e.data.code);
  };
  worker.onerror = (e) => {
    e.preventDefault();
    new Logger({ level: 1 }).error(`uffd worker crashed: ${e.message}`);
    resolve(1);
  };
  worker.postMessage({ ...rest, controlFd, logOrigin } satisfies RuntimeConfig);
  const code = await promise;
  for (const s of sigs) Deno.removeSignalListener(s, onSignal);
  worker.terminate();
  closeFd(controlFd);
  return code;
}
