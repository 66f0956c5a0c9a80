/**
 * Shared set-up for the FFI tests (not a test file itself).
 *
 * @module
 */
import {
  closeFd,
  E,
  O,
  SysError,
  UFFD_USER_MODE_ONLY,
  userfaultfd,
} from "../../ffi/mod.ts";
import type { Command } from "./fault_worker.ts";

/**
 * A non-blocking close-on-exec userfaultfd for this process, as the
 * restorer creates it. Without CAP_SYS_PTRACE (and with
 * vm.unprivileged_userfaultfd = 0) that fails with EPERM; user-mode-only
 * is enough for these tests, which never fault from kernel mode.
 */
export function newUffd(): number {
  try {
    return userfaultfd(O.CLOEXEC | O.NONBLOCK);
  } catch (e) {
    if (!(e instanceof SysError) || e.errno !== E.EPERM) throw e;
    return userfaultfd(O.CLOEXEC | O.NONBLOCK | UFFD_USER_MODE_ONLY);
  }
}

/** Closes every fd given, ignoring errors (for `finally` blocks). */
export function closeAll(...fds: number[]): void {
  for (const fd of fds) {
    try {
      closeFd(fd);
    } catch {
      // already closed
    }
  }
}

/** The target of `/proc/self/fd/<fd>`, e.g. `anon_inode:[userfaultfd]`. */
export function fdTarget(fd: number): string {
  return Deno.readLinkSync(`/proc/self/fd/${fd}`);
}

/**
 * A thread that touches memory on command (tests/ffi/fault_worker.ts), so
 * that it, not the test's thread, blocks in a userfaultfd fault or event.
 */
export class FaultThread {
  readonly #worker = new Worker(
    new URL("./fault_worker.ts", import.meta.url),
    { type: "module" },
  );
  readonly #replies: ((v: number) => void)[] = [];
  readonly #timeoutMs: number;

  /** `timeoutMs`: how long a command may stay blocked before `run` fails. */
  constructor(options: { timeoutMs: number }) {
    this.#timeoutMs = options.timeoutMs;
    this.#worker.onmessage = (e: MessageEvent<number>) =>
      this.#replies.shift()?.(e.data);
  }

  /**
   * The command's reply, failing (instead of hanging the suite) if the
   * thread stays blocked, e.g. on an event the test did not expect.
   */
  async run(c: Command): Promise<number> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      return await Promise.race([
        new Promise<number>((resolve) => {
          this.#replies.push(resolve);
          this.#worker.postMessage(c);
        }),
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () => reject(new Error(`worker still blocked in ${c.op}`)),
            this.#timeoutMs,
          );
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Ends the thread (close the uffd first to release a blocked one). */
  terminate(): void {
    this.#worker.terminate();
  }
}
