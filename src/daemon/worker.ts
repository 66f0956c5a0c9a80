/**
 * The uffd thread. The main thread keeps Deno's event loop free for
 * signals; this worker runs the synchronous loop of `runtime.ts` and
 * reports its phases and exit code back.
 *
 * @module
 */
import { type Phase, runDaemon, type RuntimeConfig } from "./runtime.ts";

/** Messages from the worker to the main thread. */
export type WorkerReport =
  | { type: "phase"; phase: Phase }
  | { type: "done"; code: number };

interface WorkerScope {
  onmessage: ((e: MessageEvent<RuntimeConfig>) => void) | null;
  postMessage(m: WorkerReport): void;
}

/** True when this code runs inside a Worker. */
export function inWorker(): boolean {
  const g = globalThis as { WorkerGlobalScope?: abstract new () => unknown };
  return g.WorkerGlobalScope !== undefined &&
    globalThis instanceof g.WorkerGlobalScope;
}

/** The worker's entry point: waits for the config, runs the daemon. */
export function workerMain(): void {
  const scope = globalThis as unknown as WorkerScope;
  scope.onmessage = (e) => {
    scope.onmessage = null;
    const code = runDaemon(
      e.data,
      (phase) => scope.postMessage({ type: "phase", phase }),
    );
    scope.postMessage({ type: "done", code });
  };
}
