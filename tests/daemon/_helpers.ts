/**
 * Shared set-up of the daemon tests (and of tests/cli_test.ts): scratch
 * directories, userfaultfds on this process's memory, and lazyd run as a
 * subprocess with this test playing `criu restore`.
 *
 * @module
 */
import { join } from "node:path";
import { connectUnix, E, SysError, writeFd } from "../../ffi/mod.ts";
import { lazydCommand, waitFor } from "../e2e/env.ts";

/** A fresh scratch directory, removed when `fn` settles. */
export async function withTemp<T>(
  prefix: string,
  fn: (dir: string) => T | Promise<T>,
): Promise<T> {
  const dir = Deno.makeTempDirSync({ prefix: `lazyd-${prefix}-` });
  try {
    return await fn(dir);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
}

export { closeAll, newUffd } from "../ffi/helpers.ts";

/** The name lazyd (and CRIU) give the restore socket in the work directory. */
export const SOCKET = "lazy-pages.socket";

/** Whether `path` is a socket file. */
export function isSocket(path: string): boolean {
  try {
    return Deno.statSync(path).isSocket === true;
  } catch {
    return false;
  }
}

/** A lazyd subprocess. */
export interface LazydProc {
  proc: Deno.ChildProcess;
  /** Resolves once lazyd has exited, with its status and decoded output. */
  done: Promise<{ code: number; stdout: string; stderr: string }>;
  /** Whether it has exited yet. */
  exited(): boolean;
  /** Kills it if still running and waits for it (for `finally` blocks). */
  stop(): Promise<void>;
}

/**
 * Starts `lazyd ARGS` (see `lazydCommand`) with `cwd`, stdout and stderr
 * piped; with `waitSocket`, resolves once that socket file exists.
 */
export async function spawnLazyd(
  args: string[],
  options: { waitSocket?: string; cwd?: string } = {},
): Promise<LazydProc> {
  const [cmd, ...pre] = lazydCommand();
  const proc = new Deno.Command(cmd, {
    args: [...pre, ...args],
    cwd: options.cwd,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  let finished = false;
  const dec = new TextDecoder();
  const done = proc.output().then((o) => {
    finished = true;
    return {
      code: o.code,
      stdout: dec.decode(o.stdout),
      stderr: dec.decode(o.stderr),
    };
  });
  const l: LazydProc = {
    proc,
    done,
    exited: () => finished,
    stop: async () => {
      if (!finished) {
        try {
          proc.kill("SIGKILL");
        } catch { /* exited meanwhile */ }
      }
      await done;
    },
  };
  const sock = options.waitSocket;
  if (sock !== undefined) {
    try {
      await waitFor(`lazyd to listen on ${sock}`, async () => {
        if (finished) {
          const r = await done;
          throw new Error(
            `lazyd exited ${r.code} before listening:\n${r.stdout}\n${r.stderr}`,
          );
        }
        return isSocket(sock);
      }, { timeoutMs: 30_000 });
    } catch (e) {
      await l.stop();
      throw e;
    }
  }
  return l;
}

/** Starts lazyd on `dir` (log to stderr unless `args` say otherwise) and waits for its socket. */
export function serveDir(dir: string, args: string[] = []): Promise<LazydProc> {
  return spawnLazyd(["-D", dir, ...args], { waitSocket: join(dir, SOCKET) });
}

/**
 * Connects to lazyd's socket in `dir`, as `criu restore` does. The socket
 * file appears at bind(), a moment before listen(): ECONNREFUSED is
 * retried for a while (restore itself waits for --status-fd instead).
 */
export async function connectRestore(dir: string): Promise<number> {
  const end = Date.now() + 10_000;
  for (;;) {
    try {
      return connectUnix(join(dir, SOCKET));
    } catch (e) {
      if (
        !(e instanceof SysError && e.errno === E.ECONNREFUSED) ||
        Date.now() > end
      ) throw e;
    }
    await new Promise((ok) => setTimeout(ok, 5));
  }
}

/** Writes all of `bytes` to a blocking fd. */
export function writeAll(fd: number, bytes: Uint8Array): void {
  for (let off = 0; off < bytes.length;) {
    const n = writeFd(fd, bytes.subarray(off));
    if (n === null) throw new Error("writeAll: EAGAIN on a blocking fd");
    off += n;
  }
}

/** A 32-bit little-endian word: a (signed) pid record or the finish word. */
export function word(value: number): Uint8Array {
  const b = new Uint8Array(4);
  const v = new DataView(b.buffer);
  if (value < 0) v.setInt32(0, value, true);
  else v.setUint32(0, value, true);
  return b;
}
