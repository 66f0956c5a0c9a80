/**
 * The environment end-to-end tests run in: real CRIU 4.1.1, root, the
 * kernel's userfaultfd, and lazyd's own memory-verifying workload.
 *
 * A test that needs any of these is declared with {@linkcode e2eTest}: when
 * something is missing it is skipped on a developer's machine and fails in
 * CI (`CI=true`), so a CI run can never pass by skipping.
 *
 * @module
 */

import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Stats } from "../../src/daemon/mod.ts";
import { childrenOf } from "../../src/daemon/host_pid.ts";
import { PERMISSIONS, V8_FLAGS } from "../../scripts/build/permissions.ts";

/** True when running in CI, where missing prerequisites are failures. */
export const IN_CI = Deno.env.get("CI") === "true";

/** The repository's root directory. */
export const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

// Every `deno run` of lazyd this harness starts (tests, benchmarks, the
// QEMU guest) would otherwise look for a newer Deno in the background
// some 400 ms after start: a DNS query to the outside world, and CPU
// taken from the restore it is racing (in the emulated guest, a tenth of
// a second of it). The compiled executable never checks.
Deno.env.set("DENO_NO_UPDATE_CHECK", "1");

/** Where `scripts/install_criu.sh` puts CRIU 4.1.1. */
export const CRIU_PREFIX = Deno.env.get("LAZYD_CRIU_PREFIX") ??
  "/opt/lazyd/criu-4.1.1";

/** The CRIU 4.1.1 wrapper. */
export const CRIU = join(CRIU_PREFIX, "bin", "criu");

/** crit, CRIU's reference image decoder. */
export const CRIT = join(CRIU_PREFIX, "bin", "crit");

/** Things an end-to-end test can need. */
export type Need = "root" | "criu" | "crit" | "gcc" | "uffd";

function isExecutable(path: string): boolean {
  try {
    return (Deno.statSync(path).mode! & 0o111) !== 0;
  } catch {
    return false;
  }
}

function onPath(cmd: string): boolean {
  return (Deno.env.get("PATH") ?? "/usr/bin:/bin").split(":").some((d) =>
    isExecutable(join(d, cmd))
  );
}

const probes: Record<Need, () => boolean> = {
  root: () => Deno.uid() === 0,
  criu: () => isExecutable(CRIU),
  crit: () => isExecutable(CRIT),
  gcc: () => onPath("gcc"),
  uffd: () => {
    // The unprivileged sysctl is irrelevant as root; the file only exists
    // when the kernel was built with userfaultfd.
    try {
      Deno.statSync("/proc/sys/vm/unprivileged_userfaultfd");
      return true;
    } catch {
      return false;
    }
  },
};

/** The prerequisites from `needs` that this machine lacks. */
export function missing(needs: readonly Need[]): Need[] {
  return needs.filter((n) => !probes[n]());
}

/** Options of {@linkcode e2eTest}. */
export interface E2eOptions {
  /** Prerequisites; the test is skipped (locally) or failed (CI) without them. */
  needs: Need[];
  /** Extra sanitizer switches, passed through to Deno.test. */
  sanitizeResources?: boolean;
  sanitizeOps?: boolean;
}

/**
 * Declares a test that needs root, CRIU or kernel features. Locally it is
 * ignored when they are missing; in CI it runs and fails, naming them.
 */
export function e2eTest(
  name: string,
  options: E2eOptions,
  fn: (t: Deno.TestContext) => Promise<void>,
): void {
  const lacking = missing(options.needs);
  Deno.test({
    name,
    ignore: lacking.length > 0 && !IN_CI,
    sanitizeResources: options.sanitizeResources ?? false,
    sanitizeOps: options.sanitizeOps ?? false,
    fn: async (t) => {
      if (lacking.length > 0) {
        throw new Error(
          `${name}: this machine lacks ${lacking.join(", ")} ` +
            "(run scripts/setup.sh as root)",
        );
      }
      await fn(t);
    },
  });
}

/** The result of {@linkcode run}. */
export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a command to completion and collects its output. */
export async function run(
  cmd: string,
  args: string[],
  options: { cwd?: string; env?: Record<string, string> } = {},
): Promise<RunResult> {
  const out = await new Deno.Command(cmd, {
    args,
    cwd: options.cwd,
    env: options.env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return {
    code: out.code,
    stdout: dec.decode(out.stdout),
    stderr: dec.decode(out.stderr),
  };
}

/** Runs a command and throws, with its output, unless it exits 0. */
export async function runOk(
  cmd: string,
  args: string[],
  options: { cwd?: string; env?: Record<string, string> } = {},
): Promise<RunResult> {
  const r = await run(cmd, args, options);
  if (r.code !== 0) {
    throw new Error(
      `${cmd} ${args.join(" ")} exited ${r.code}\n${r.stdout}\n${r.stderr}`,
    );
  }
  return r;
}

/** Polls `cond` every 10 ms until it holds; throws `what` after the timeout. */
export async function waitFor(
  what: string,
  cond: () => boolean | Promise<boolean>,
  options: { timeoutMs?: number } = {},
): Promise<void> {
  const end = Date.now() + (options.timeoutMs ?? 60_000);
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Compiles tests/e2e/workload.c once per source version; returns the binary. */
export function buildWorkload(): Promise<string> {
  return buildC("tests/e2e/workload.c");
}

const builtC = new Map<string, Promise<string>>();

/**
 * Compiles a C program of the repository (`rel`, relative to its root)
 * into `.cache/` once per source version; returns the binary's path.
 */
export function buildC(rel: string): Promise<string> {
  let bin = builtC.get(rel);
  if (!bin) {
    bin = (async () => {
      const src = join(ROOT, rel);
      const text = Deno.readFileSync(src);
      const hash = Array.from(
        new Uint8Array(await crypto.subtle.digest("SHA-256", text)).slice(0, 8),
      ).map((b) => b.toString(16).padStart(2, "0")).join("");
      const dir = join(ROOT, ".cache");
      Deno.mkdirSync(dir, { recursive: true });
      const name = rel.split("/").pop()!.replace(/\.c$/, "");
      const out = join(dir, `${name}-${hash}`);
      if (!isExecutable(out)) {
        const tmp = `${out}.${Deno.pid}`;
        await runOk("gcc", ["-O2", "-Wall", "-pthread", "-o", tmp, src]);
        Deno.renameSync(tmp, out);
      }
      return out;
    })();
    builtC.set(rel, bin);
  }
  return bin;
}

/**
 * CRIU's lazy page server grows its pipes to 4 MiB; without
 * CAP_SYS_RESOURCE-sized limits it fails. Raised once, left raised.
 */
export function raisePipeMaxSize(): void {
  const f = "/proc/sys/fs/pipe-max-size";
  if (Number(Deno.readTextFileSync(f)) < 4 << 20) {
    Deno.writeTextFileSync(f, String(4 << 20));
  }
}

/** A scratch directory for one test, removed by `cleanup`. */
export function scratch(prefix: string): string {
  return Deno.makeTempDirSync({ prefix: `lazyd-${prefix}-` });
}

function exeOf(pid: number): string | undefined {
  try {
    return Deno.readLinkSync(`/proc/${pid}/exe`);
  } catch {
    return undefined;
  }
}

/** Options of {@linkcode startWorkload}. */
export interface WorkloadOptions {
  /** Size of each process's buffer. */
  sizeMiB: number;
  /** Extra workload flags: -c N, -z, -t N, -e, -r, -p P. */
  args?: string[];
}

/** A running workload tree (its root is PID 1 of its own PID namespace). */
export interface Workload {
  /** The run directory (cwd of the workload, holds its log). */
  dir: string;
  /** The workload's log file. */
  log: string;
  /** Host pid of the workload's root process. */
  pid: number;
  /** The `unshare` process holding the namespace, our child. */
  holder: Deno.ChildProcess;
  /** Lines of the log so far. */
  lines(): string[];
  /** Waits for a log line matching `re`; returns it. */
  waitLine(re: RegExp, timeoutMs?: number): Promise<string>;
  /** Kills whatever is left of the original tree. */
  kill(): Promise<void>;
}

/**
 * Starts the workload as PID 1 of a new PID namespace in its own session:
 * CRIU then dumps it without --shell-job, and a same-host restore gets a
 * fresh PID namespace, so the frozen source and the restored copy never
 * clash over pids. Its cwd must be writable: CRIU's parasite mounts a
 * private procfs relative to it.
 */
export async function startWorkload(
  dir: string,
  options: WorkloadOptions,
): Promise<Workload> {
  const bin = await buildWorkload();
  const log = join(dir, "workload.log");
  const holder = new Deno.Command("setsid", {
    args: [
      "--wait",
      "unshare",
      "--pid",
      "--fork",
      "/bin/sh",
      "-c",
      'exec "$0" "$@" </dev/null >"$WL_OUT" 2>&1',
      bin,
      String(options.sizeMiB),
      log,
      ...(options.args ?? []),
    ],
    cwd: dir,
    env: { WL_OUT: join(dir, "workload.out") },
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  const lines = () => {
    try {
      return Deno.readTextFileSync(log).split("\n").filter(Boolean);
    } catch {
      return [];
    }
  };
  const waitLine = async (re: RegExp, timeoutMs = 120_000) => {
    let hit: string | undefined;
    await waitFor(`workload log line ${re}`, () => {
      hit = lines().find((l) => re.test(l));
      if (!hit && lines().some((l) => l.startsWith("BAD"))) {
        throw new Error(`workload reported: ${lines().join("\n")}`);
      }
      return hit !== undefined;
    }, { timeoutMs });
    return hit!;
  };
  let pid = 0;
  await waitFor("the workload process", () => {
    const todo = [holder.pid];
    while (todo.length) {
      const p = todo.shift()!;
      if (exeOf(p) === bin) {
        pid = p;
        return true;
      }
      todo.push(...childrenOf(p));
    }
    return false;
  }, { timeoutMs: 10_000 });
  const w: Workload = {
    dir,
    log,
    pid,
    holder,
    lines,
    waitLine,
    kill: async () => {
      try {
        Deno.kill(pid, "SIGKILL");
      } catch { /* already gone */ }
      try {
        holder.kill("SIGKILL");
      } catch { /* already gone */ }
      await holder.status;
    },
  };
  // The root and every child print "ready" once their memory is filled.
  const procs = 1 + Number(optionValue(options.args ?? [], "-c") ?? 0);
  await waitFor("workload ready", () => {
    if (lines().some((l) => l.startsWith("mmap failed"))) {
      throw new Error(lines().join("\n"));
    }
    return lines().filter((l) => l.startsWith("ready")).length >= procs;
  }, { timeoutMs: 120_000 });
  return w;
}

function optionValue(args: string[], flag: string): string | undefined {
  const i = args.indexOf(flag);
  return i >= 0 ? args[i + 1] : undefined;
}

/**
 * Environment for every CRIU command. CRIU stops a task leaving its parasite
 * or restorer blob with a hardware breakpoint on the sigreturn; in some VMs
 * (this project's CI machines among them) debug registers never fire and
 * dump and restore hang for ever ("Waiting for PID to trap"). CRIU's
 * fault-injection switch 130 (FI_NO_BREAKPOINTS) makes it trace to the
 * syscall instead, which works everywhere and costs a few milliseconds.
 */
export const CRIU_ENV = { CRIU_FAULT: "130" };

/** Dumps the workload with `criu dump` (the tree is killed afterwards). */
export async function dump(w: Workload, dir: string): Promise<void> {
  Deno.mkdirSync(dir, { recursive: true });
  await runOk(CRIU, [
    "dump",
    "-t",
    String(w.pid),
    "-D",
    dir,
    "-v4",
    "-o",
    "dump.log",
  ], { env: CRIU_ENV });
  await w.holder.status;
}

/** A `criu dump --lazy-pages` whose page server is serving. */
export interface LazyDump {
  /** The dump process (exits when the page-server session ends). */
  proc: Deno.ChildProcess;
  /** Its exit status and output, once it ends. */
  result: Promise<Deno.CommandOutput>;
  /** Page-server port. */
  port: number;
  /** Stops the page server (and with it the frozen source tree). */
  stop(): Promise<void>;
}

/** A free TCP port on the loopback. */
export function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/**
 * `criu dump --lazy-pages`: images go to `dir` and the lazy pages stay in
 * the source's memory, served on `port`. Resolves once CRIU signals through
 * --status-fd that its page server listens.
 */
export async function dumpLazy(
  w: Workload,
  dir: string,
  options: {
    port?: number;
    address?: string;
    extra?: string[];
    /** CRIU's -v level (default 4; benchmarks use 2: the page server logs each request at 4). */
    logLevel?: number;
  } = {},
): Promise<LazyDump> {
  raisePipeMaxSize();
  Deno.mkdirSync(dir, { recursive: true });
  const port = options.port ?? freePort();
  const fifo = join(dir, "..", `dump-status-${port}`);
  await runOk("mkfifo", [fifo]);
  const proc = new Deno.Command("bash", {
    args: [
      "-c",
      'exec "$@" 9>"$FIFO"',
      "bash",
      CRIU,
      "dump",
      "-t",
      String(w.pid),
      "-D",
      dir,
      "--lazy-pages",
      "--address",
      options.address ?? "127.0.0.1",
      "--port",
      String(port),
      "--status-fd",
      "9",
      `-v${options.logLevel ?? 4}`,
      "-o",
      "dump.log",
      ...(options.extra ?? []),
    ],
    env: { FIFO: fifo, ...CRIU_ENV },
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  // Opening the FIFO blocks until CRIU opens its end; the read returns the
  // status byte once the page server listens, or EOF if the dump failed.
  const f = await Deno.open(fifo, { read: true });
  const buf = new Uint8Array(1);
  const n = await f.read(buf);
  f.close();
  Deno.removeSync(fifo);
  if (n !== 1) {
    const st = await proc.output();
    throw new Error(
      `criu dump --lazy-pages failed (${st.code}): ${
        tail(join(dir, "dump.log"))
      }`,
    );
  }
  const result = proc.output();
  return {
    proc,
    result,
    port,
    stop: async () => {
      try {
        proc.kill("SIGKILL");
      } catch { /* exited */ }
      await result;
      await w.kill();
    },
  };
}

/** The last lines of a log file, for error messages. */
export function tail(file: string, lines = 15): string {
  try {
    return Deno.readTextFileSync(file).trimEnd().split("\n").slice(-lines)
      .join("\n");
  } catch {
    return `(no ${file})`;
  }
}

/** Copies an image directory like a user would (cp -a keeps the parent link). */
export async function copyImages(from: string, to: string): Promise<void> {
  await runOk("cp", ["-a", from, to]);
}

/** A lazy-pages daemon started for a restore. */
export interface Daemon {
  proc: Deno.ChildProcess;
  /** Resolves with the daemon's exit code and output. */
  result: Promise<Deno.CommandOutput>;
}

/**
 * Starts a lazy-pages daemon (`cmd` is the full command line) and waits
 * until `dir/lazy-pages.socket` exists, the moment restore may connect.
 */
export async function startDaemon(
  cmd: string[],
  dir: string,
): Promise<Daemon> {
  const sock = join(dir, "lazy-pages.socket");
  try {
    Deno.removeSync(sock);
  } catch { /* none */ }
  const proc = new Deno.Command(cmd[0], {
    args: cmd.slice(1),
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const result = proc.output();
  let exited = false;
  result.then(() => exited = true, () => exited = true);
  await waitFor(`${cmd[0]} to listen on ${sock}`, () => {
    if (exited) throw new Error(`${cmd.join(" ")} exited before listening`);
    try {
      return Deno.statSync(sock).isSocket === true;
    } catch {
      return false;
    }
  }, { timeoutMs: 30_000 });
  return { proc, result };
}

/** Runs `criu restore --lazy-pages -d` and returns the restored root's host pid. */
export async function restoreLazy(
  dir: string,
  options: { lazy?: boolean } = {},
): Promise<number> {
  const pidfile = join(dir, "..", `restored-${crypto.randomUUID()}.pid`);
  const r = await run(CRIU, [
    "restore",
    "-D",
    dir,
    ...(options.lazy === false ? [] : ["--lazy-pages"]),
    "-d",
    "--pidfile",
    pidfile,
    "-v4",
    "-o",
    "restore.log",
  ], { env: CRIU_ENV });
  if (r.code !== 0) {
    throw new Error(
      `criu restore exited ${r.code}: ${tail(join(dir, "restore.log"))}`,
    );
  }
  const pid = Number(Deno.readTextFileSync(pidfile).trim());
  Deno.removeSync(pidfile);
  return pid;
}

/**
 * Tells a restored workload to verify all its memory and waits for its
 * verdict. Returns the final log lines; throws on any BAD line.
 */
export async function verifyRestored(
  w: Workload,
  pid: number,
  options: { timeoutMs?: number } = {},
): Promise<string[]> {
  const before = w.lines().length;
  Deno.kill(pid, "SIGUSR2");
  await waitFor("the restored workload's verdict", () => {
    const l = w.lines().slice(before);
    return l.some((x) => /^exit \d+ pid=1\b/.test(x));
  }, { timeoutMs: options.timeoutMs ?? 300_000 });
  const l = w.lines().slice(before);
  if (
    l.some((x) => x.startsWith("BAD")) ||
    !l.some((x) => /^exit 0 pid=1\b/.test(x))
  ) {
    throw new Error(`restored workload failed verification:\n${l.join("\n")}`);
  }
  return l;
}

/**
 * How the e2e tests run lazyd: `$LAZYD_CMD` (split on spaces, e.g. the
 * built `dist/lazyd`) or `deno run --allow-all --v8-flags=--no-lazy mod.ts`
 * from this checkout.
 */
export function lazydCommand(): string[] {
  const cmd = Deno.env.get("LAZYD_CMD");
  if (cmd) return cmd.split(" ").filter(Boolean);
  return [
    Deno.execPath(),
    "run",
    ...PERMISSIONS,
    ...V8_FLAGS,
    join(ROOT, "mod.ts"),
  ];
}

/** What `lazyd --stats-file` writes. */
export type LazydStats = Stats;

/** A lazyd run serving one images directory, with its stats file. */
export interface LazydRun extends Daemon {
  /** Reads the stats file once lazyd has exited. */
  stats(): LazydStats;
}

/** Starts lazyd on `dir` (log `lazyd.log`, stats `stats.json`, both in `dir`). */
export async function startLazyd(
  dir: string,
  extra: string[] = [],
): Promise<LazydRun> {
  const d = await startDaemon([
    ...lazydCommand(),
    "-D",
    dir,
    "-v4",
    "-o",
    "lazyd.log",
    "--stats-file",
    "stats.json",
    ...extra,
  ], dir);
  return {
    ...d,
    stats: () => JSON.parse(Deno.readTextFileSync(join(dir, "stats.json"))),
  };
}

/** Two "hosts" on this machine: a network namespace joined by a veth pair. */
export interface VethPair {
  /** The namespace (the "destination host"). */
  ns: string;
  /** Address of the root namespace's end (the "source host"). */
  source: string;
  /** Address of the namespace's end. */
  destination: string;
  /** Runs `cmd` inside the namespace: the prefix for a command line. */
  exec: string[];
  /** Removes the namespace and the veth pair. */
  remove(): Promise<void>;
}

/**
 * Creates a network namespace joined to this one by a veth pair with
 * link-local addresses (169.254.83.1 here, .2 there), never routed
 * anywhere. Remove it with `remove()`.
 */
export async function makeVethPair(): Promise<VethPair> {
  const ns = `lazyd${Deno.pid}`;
  const veth = `lzv${Deno.pid % 100000}`;
  await runOk("ip", ["netns", "add", ns]);
  const remove = async () => {
    await run("ip", ["link", "del", `${veth}a`]);
    await run("ip", ["netns", "del", ns]);
  };
  try {
    await runOk("ip", [
      "link",
      "add",
      `${veth}a`,
      "type",
      "veth",
      "peer",
      "name",
      `${veth}b`,
    ]);
    await runOk("ip", ["link", "set", `${veth}b`, "netns", ns]);
    await runOk("ip", ["addr", "add", "169.254.83.1/30", "dev", `${veth}a`]);
    await runOk("ip", ["link", "set", `${veth}a`, "up"]);
    await runOk("ip", [
      "-n",
      ns,
      "addr",
      "add",
      "169.254.83.2/30",
      "dev",
      `${veth}b`,
    ]);
    await runOk("ip", ["-n", ns, "link", "set", `${veth}b`, "up"]);
    await runOk("ip", ["-n", ns, "link", "set", "lo", "up"]);
  } catch (e) {
    await remove();
    throw e;
  }
  return {
    ns,
    source: "169.254.83.1",
    destination: "169.254.83.2",
    exec: ["ip", "netns", "exec", ns],
    remove,
  };
}

/** Waits (up to 10 s) until process `pid` no longer exists. */
export async function waitGone(pid: number): Promise<void> {
  await waitFor(`process ${pid} to be gone`, () => {
    try {
      Deno.kill(pid, "SIGCONT");
      return false;
    } catch {
      return true;
    }
  }, { timeoutMs: 10_000 });
}
