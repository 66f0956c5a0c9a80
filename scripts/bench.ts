/**
 * `deno task bench`: `criu lazy-pages` and lazyd side by side on the same
 * dumps (issue 3). Prints, per configuration (size x access pattern), the
 * medians of both daemons and the ratio lazyd/CRIU, with a PASS/MISS mark
 * per target, and writes everything to `.cache/bench/results-<time>.json`.
 *
 * Targets: full transfer <= 0.5x, first full pass <= 0.7x, fault latency
 * p50 <= 1.0x, lazyd peak RSS <= 150 MiB at 1 GiB. p99, CPU seconds and the
 * restore time are reported without a target.
 *
 * Method, per configuration:
 * 1. The project's workload (tests/e2e/workload.c) fills SIZE MiB in its own
 *    PID namespace and is dumped ONCE with `criu dump` (all pages in the
 *    images). Sequential access runs the workload with `-l` (first-touch
 *    latency recorded in page order), random access with `-r`; "idle"
 *    sends the SIGUSR2 below only once the daemon exited, so the transfer
 *    has the CPUs to itself (the pass figures are then those of memory
 *    already in place).
 * 2. Each repetition runs both daemons, in alternating order (CRIU first in
 *    odd repetitions, lazyd first in even ones) so that neither always gets
 *    the warmer or the quieter slot. Each run:
 *    - copies the dump to a fresh directory (`cp -a`) and syncs it, so both
 *      daemons read the same freshly written, page-cached files and no
 *      writeback happens during the measurement;
 *    - resets the workload's log to its dump-time content (the restored
 *      process appends to the original file);
 *    - starts the daemon under GNU `/usr/bin/time -f "%e %U %S %M"` (daemon
 *      CPU seconds = user + system, peak RSS = max RSS; both are one
 *      process: the criu wrapper execs, lazyd's uffd thread is a Worker) and
 *      waits until it listens on lazy-pages.socket, so runtime start-up is
 *      outside the transfer time but inside the CPU and RSS figures;
 *    - runs `criu restore --lazy-pages -d` and sends SIGUSR2 to the restored
 *      workload the moment restore returns; the workload then times its
 *      first full pass over all its memory (`pass_ms`), records each page's
 *      first-touch latency, and verifies every word;
 *    - waits for the workload's verdict and the daemon's exit.
 *    Full transfer time = start of `criu restore` -> daemon exit.
 * 3. Every number in the table is the median over the repetitions (the
 *    machine is shared and noisy); every single run is in the JSON.
 * 4. For reference, one plain `criu restore` (no lazy pages: every page is
 *    in place before the process runs) of the same dump reports the pass
 *    and first-touch latency no daemon can beat. On some VMs the first
 *    touch of a page the kernel filled costs microseconds even then.
 *    And each daemon is started on the dump, left to listen and stopped
 *    with SIGTERM: the CPU and RSS it costs before paging anything (for
 *    lazyd: the Deno runtime, the worker, the image parsing).
 *
 * Fairness: both daemons get the same images, the same log level (the
 * default, logging to a file: `-v4` would log every fault and penalise both)
 * and identical restore commands. lazyd runs with its default tunables
 * unless `--extra` says otherwise. A failed memory verification, a daemon
 * exiting non-zero or a failed restore aborts the bench with a non-zero
 * exit: a fast wrong answer is not a result.
 *
 * Everything is created under one /tmp directory (dumps are SIZE MiB each)
 * that is removed at the end, on error and on SIGINT/SIGTERM, together with
 * every process the bench started.
 *
 * Remote mode (`--mode remote`, issue 4): lazy migration, the same
 * workload fetched from the source's page server over the loopback.
 * Targets: full transfer <= 0.35x, first full pass <= 0.5x, fault latency
 * p50 and p99 <= 1.0x. A `criu dump --lazy-pages` page server serves ONE
 * session, so every run of either daemon has its own workload and dump:
 * start the workload, `criu dump --lazy-pages --address 127.0.0.1 --port
 * P` (at CRIU's default log level; ready when its --status-fd says so),
 * copy the images, start the daemon with `--page-server --address
 * 127.0.0.1 --port P`, restore, SIGUSR2 at once, wait for the verdict, the
 * daemon's exit and the source dump's exit (status 0 required). Full
 * transfer = restore start -> daemon exit, as in local mode. "restore end
 * -> last page" is measured from outside, the same way for both daemons:
 * the restored process's RssAnon is sampled every 2 ms from the SIGUSR2 on,
 * and the last page arrived at the first sample within a small slack
 * (1 MiB + 16 bytes a page: what the workload allocates in its pass) of
 * the final value; it leaves out whatever a daemon does after delivering
 * (closing the session, exiting). The reference runs (plain restore, idle
 * daemon) belong to local mode only.
 *
 * Usage (as root, CRIU 4.1.1 installed by scripts/install_criu.sh):
 *   deno task bench [--mode local,remote] [--sizes 256,1024]
 *     [--access seq,random,idle] [--reps 3] [--lazyd "deno run -A --v8-flags=--no-lazy mod.ts"]
 *     [--extra "--fault-window 16"] [--variants "A;B"] [--ceiling] [--keep]
 *
 * --mode picks local images, lazy migration or both (the default; local
 * first). --lazyd is the daemon command (a leading `deno` means the running
 * Deno; relative paths are relative to the repository root), e.g.
 * `--lazyd dist/lazyd`. --extra is appended to lazyd's arguments, for
 * tuning. --variants runs more lazyd configurations in the same
 * repetitions, each with its own extra arguments after --extra (variants
 * separated by ";", e.g. `--variants "--background-inflight 64;
 * --fault-window 64"`), reported one line each against the same CRIU runs.
 * --ceiling (remote mode) also times scripts/bench/ceiling.c once per
 * repetition: a C client that fetches every lazy page of a fresh lazy dump
 * of the same workload (pipelined PS_IOV_GET, recv, UFFDIO_COPY into a
 * region of its own) with nothing else running and no restore: the floor
 * for the transfer on this machine, printed with each daemon's "restore
 * end -> last page" as a multiple of it.
 * --keep leaves the scratch directory in place (debugging).
 *
 * @module
 */

import { join } from "node:path";
import {
  buildWorkload,
  CRIU,
  dump,
  missing,
  raisePipeMaxSize,
  ROOT,
  runOk,
  startWorkload,
} from "../tests/e2e/env.ts";
import {
  cleanupAll,
  type DaemonKind,
  type IdleResult,
  idleRun,
  killUnder,
  onCleanup,
  runOnce,
  type RunResult,
  TIME,
} from "./bench/run.ts";
import { runRemote } from "./bench/remote.ts";
import { type CeilingResult, runCeiling } from "./bench/ceiling.ts";

const USAGE = `usage: deno task bench [--mode local,remote] [--sizes 256,1024]
  [--access seq,random,idle] [--reps 3] [--lazyd "deno run -A --v8-flags=--no-lazy mod.ts"]
  [--extra "--fault-window 16"] [--variants "A;B"] [--ceiling] [--keep]`;

/** Where the pages come from: local images, or the source's page server. */
type Mode = "local" | "remote";
const MODES: Mode[] = ["local", "remote"];

/**
 * Access patterns and the workload flags that produce them. "idle" leaves
 * the restored process alone until the daemon is done (its pass comes
 * after): the transfer alone, with nobody else wanting the CPUs.
 */
const ACCESS: Record<
  string,
  { label: string; args: string[]; passAfter?: boolean }
> = {
  seq: { label: "sequential", args: ["-l"] },
  random: { label: "random", args: ["-r"] },
  idle: {
    label: "no (pass after the transfer)",
    args: ["-l"],
    passAfter: true,
  },
};

type Key =
  | "transferS"
  | "passMs"
  | "p50Us"
  | "p99Us"
  | "cpuS"
  | "maxRssMiB"
  | "restoreS"
  | "drainS"
  | "lastPageS"
  | "sourceExitS";

interface Metric {
  key: Key;
  label: string;
  unit: string;
  digits: number;
  /** Target on the ratio lazyd/CRIU, per mode (issue 3: local, issue 4: remote). */
  ratio?: Partial<Record<Mode, number>>;
  /** Target on lazyd's own value, in one mode, applied only at `atSizeMiB`. */
  limit?: { mode: Mode; value: number; atSizeMiB: number };
  /** Measured in this mode only. */
  only?: Mode;
}

/** Every metric, in table order, with each mode's targets. */
const METRICS: Metric[] = [
  {
    key: "transferS",
    label: "full transfer",
    unit: "s",
    digits: 3,
    ratio: { local: 0.5, remote: 0.35 },
  },
  {
    key: "passMs",
    label: "first full pass",
    unit: "ms",
    digits: 1,
    ratio: { local: 0.7, remote: 0.5 },
  },
  {
    key: "p50Us",
    label: "fault latency p50",
    unit: "us",
    digits: 1,
    ratio: { local: 1.0, remote: 1.0 },
  },
  {
    key: "p99Us",
    label: "fault latency p99",
    unit: "us",
    digits: 1,
    ratio: { remote: 1.0 },
  },
  { key: "cpuS", label: "daemon CPU", unit: "s", digits: 2 },
  {
    key: "maxRssMiB",
    label: "daemon peak RSS",
    unit: "MiB",
    digits: 1,
    limit: { mode: "local", value: 150, atSizeMiB: 1024 },
  },
  { key: "restoreS", label: "(criu restore -d)", unit: "s", digits: 3 },
  { key: "drainS", label: "(restore end -> exit)", unit: "s", digits: 3 },
  {
    key: "lastPageS",
    label: "(restore end -> last page)",
    unit: "s",
    digits: 3,
    only: "remote",
  },
  {
    key: "sourceExitS",
    label: "(restore start -> source exit)",
    unit: "s",
    digits: 3,
    only: "remote",
  },
];

interface Options {
  modes: Mode[];
  sizes: number[];
  access: string[];
  reps: number;
  lazyd: string[];
  extra: string[];
  /** More lazyd configurations: label (as given) and extra arguments. */
  variants: { label: string; args: string[] }[];
  keep: boolean;
  /** Remote mode: also time scripts/bench/ceiling.c, the transfer floor. */
  ceiling: boolean;
}

/** A command-line mistake: printed without a stack, exit status 2. */
class UsageError extends Error {}

function parse(args: string[]): Options {
  // Hand-rolled: node:util's parseArgs refuses `--extra "--fault-window 16"`
  // (a value that starts with a dash).
  const values = {
    mode: "local,remote",
    sizes: "256,1024",
    access: "seq,random",
    reps: "3",
    lazyd: "deno run -A --v8-flags=--no-lazy mod.ts",
    extra: "",
    variants: "",
    keep: false,
    ceiling: false,
  };
  for (let i = 0; i < args.length; i++) {
    const m = args[i].match(/^--([a-z]+)(?:=(.*))?$/s);
    const name = m?.[1] as keyof typeof values | undefined;
    if (!name || !(name in values)) {
      throw new UsageError(`unknown argument "${args[i]}"`);
    }
    if (name === "keep" || name === "ceiling") {
      values[name] = true;
      continue;
    }
    const v = m![2] ?? args[++i];
    if (v === undefined) throw new UsageError(`--${name} needs a value`);
    values[name] = v;
  }
  const modes = values.mode.split(",") as Mode[];
  for (const m of modes) {
    if (!MODES.includes(m)) {
      throw new UsageError(`--mode takes local and/or remote, not "${m}"`);
    }
  }
  const sizes = values.sizes.split(",").map(Number);
  if (sizes.some((s) => !Number.isInteger(s) || s < 1)) {
    throw new UsageError(`--sizes takes MiB counts, not "${values.sizes}"`);
  }
  const access = values.access.split(",");
  for (const a of access) {
    if (!(a in ACCESS)) {
      throw new UsageError(
        `--access takes seq, random and/or idle, not "${a}"`,
      );
    }
  }
  const reps = Number(values.reps);
  if (!Number.isInteger(reps) || reps < 1) {
    throw new UsageError(`bad --reps "${values.reps}"`);
  }
  const words = (s: string) => s.split(/\s+/).filter(Boolean);
  const lazyd = words(values.lazyd);
  if (lazyd[0] === "deno") lazyd[0] = Deno.execPath();
  const variants = values.variants.split(";").map((v) => v.trim()).filter(
    Boolean,
  ).map((label) => ({ label, args: words(label) }));
  return {
    modes: [...new Set(modes)],
    sizes,
    access,
    reps,
    lazyd,
    extra: words(values.extra),
    variants,
    keep: values.keep,
    ceiling: values.ceiling,
  };
}

/** The repository's commit, "+dirty" when src/, ffi/ or mod.ts differ from it. */
async function gitState(): Promise<string> {
  try {
    const head = (await runOk("git", ["rev-parse", "--short=12", "HEAD"]))
      .stdout.trim();
    const dirty = (await runOk("git", [
      "status",
      "--porcelain",
      "--",
      "src",
      "ffi",
      "proto",
      "mod.ts",
    ]))
      .stdout.trim();
    return dirty ? `${head}+dirty` : head;
  } catch {
    return "unknown";
  }
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** Installs Debian's `time` package when /usr/bin/time is missing. */
async function ensureTime(): Promise<void> {
  try {
    Deno.statSync(TIME);
    return;
  } catch { /* install it */ }
  console.log(`bench: ${TIME} is missing; installing Debian's "time" package`);
  await runOk("apt-get", ["install", "-y", "time"], {
    env: { DEBIAN_FRONTEND: "noninteractive" },
  });
}

function runLine(r: RunResult): string {
  const who = r.variant !== undefined ? `lazyd[${r.variant}]` : r.daemon;
  let s =
    `  rep ${r.rep + 1} ${who.padEnd(5)} transfer ${r.transferS.toFixed(3)} s` +
    `  restore ${r.restoreS.toFixed(3)} s  pass ${r.passMs.toFixed(1)} ms` +
    `  p50 ${r.p50Us.toFixed(1)} us  p99 ${r.p99Us.toFixed(1)} us` +
    `  cpu ${r.cpuS.toFixed(2)} s  rss ${r.maxRssMiB.toFixed(1)} MiB`;
  if (r.lastPageS !== undefined) {
    s += `  last page +${r.lastPageS.toFixed(3)} s`;
  }
  if (r.sourceExitS !== undefined) {
    s += `  source exit ${r.sourceExitS.toFixed(3)} s`;
  }
  if (r.lazydDrainS !== undefined && r.lastPageS !== undefined) {
    s += `  (lazyd clock: restore finished->exit ${
      r.lazydDrainS.toFixed(3)
    } s)`;
  }
  const st = r.lazydStats as
    | {
      processes?: {
        counters: {
          faults: number;
          copiedPages: number;
          backgroundPages: number;
        };
      }[];
    }
    | undefined;
  if (st?.processes) {
    const c = st.processes.reduce(
      (a, p) => ({
        faults: a.faults + p.counters.faults,
        copied: a.copied + p.counters.copiedPages,
        bg: a.bg + p.counters.backgroundPages,
      }),
      { faults: 0, copied: 0, bg: 0 },
    );
    s += `  [faults ${c.faults}, background ${
      c.copied ? (100 * c.bg / c.copied).toFixed(0) : 0
    }% of ${c.copied} pages]`;
  }
  return s;
}

/** One configuration's summary row. */
interface Row {
  metric: string;
  unit: string;
  criu: number;
  lazyd: number;
  ratio: number;
  target?: string;
  pass?: boolean;
}

function summarize(
  sizeMiB: number,
  runs: RunResult[],
  mode: Mode,
): Row[] {
  const of = (d: DaemonKind, k: Key) =>
    median(
      runs.filter((r) => r.daemon === d && r.variant === undefined).map((r) =>
        r[k] ?? NaN
      ),
    );
  return METRICS.filter((m) => !m.only || m.only === mode).map((m) => {
    const criu = of("criu", m.key);
    const lazyd = of("lazyd", m.key);
    const row: Row = {
      metric: m.label,
      unit: m.unit,
      criu,
      lazyd,
      ratio: lazyd / criu,
    };
    const target = m.ratio?.[mode];
    if (target !== undefined) {
      row.target = `<= ${target}x`;
      row.pass = row.ratio <= target;
    } else if (
      m.limit?.mode === mode && sizeMiB === m.limit.atSizeMiB
    ) {
      row.target = `<= ${m.limit.value} ${m.unit}`;
      row.pass = lazyd <= m.limit.value;
    }
    return row;
  });
}

function table(rows: Row[]): string {
  const digits = (r: Row) => METRICS.find((m) => m.label === r.metric)!.digits;
  const cells = rows.map((r) => [
    r.metric,
    `${r.criu.toFixed(digits(r))} ${r.unit}`,
    `${r.lazyd.toFixed(digits(r))} ${r.unit}`,
    Number.isFinite(r.ratio) ? `${r.ratio.toFixed(2)}x` : "-",
    r.target ?? "",
    r.pass === undefined ? "" : r.pass ? "PASS" : "MISS",
  ]);
  const head = ["metric", "criu", "lazyd", "lazyd/criu", "target", ""];
  const all = [head, ...cells];
  const w = head.map((_, i) => Math.max(...all.map((c) => c[i].length)));
  const line = (c: string[]) =>
    c.map((x, i) => i === 0 || i >= 4 ? x.padEnd(w[i]) : x.padStart(w[i])).join(
      "  ",
    )
      .trimEnd();
  return all.map((c) => "  " + line(c)).join("\n");
}

interface ConfigResult {
  mode: Mode;
  sizeMiB: number;
  access: string;
  imagesMiB?: number;
  runs: RunResult[];
  /** One plain (non-lazy) restore of the same dump, for reference. */
  reference?: RunResult;
  /** Each daemon started, listening, stopped: its fixed cost. */
  idle?: IdleResult[];
  summary?: Row[];
  /** Per lazyd variant: its medians and their ratios to CRIU's. */
  variants?: VariantRow[];
  /** Remote mode with --ceiling: the C reference client, once per rep. */
  ceiling?: CeilingResult[];
}

/** One lazyd variant's medians, against the same CRIU runs. */
interface VariantRow {
  variant: string;
  medians: Partial<Record<Key, number>>;
  ratios: Partial<Record<Key, number>>;
}

const VARIANT_KEYS: Key[] = [
  "transferS",
  "passMs",
  "p50Us",
  "p99Us",
  "lastPageS",
  "cpuS",
];

function summarizeVariants(o: Options, runs: RunResult[]): VariantRow[] {
  const med = (rs: RunResult[], k: Key) => median(rs.map((r) => r[k] ?? NaN));
  const criu = runs.filter((r) => r.daemon === "criu");
  const all = [
    {
      label: "(base)",
      runs: runs.filter((r) => r.daemon === "lazyd" && r.variant === undefined),
    },
    ...o.variants.map((v) => ({
      label: v.label,
      runs: runs.filter((r) => r.variant === v.label),
    })),
  ];
  return all.map((v) => {
    const row: VariantRow = { variant: v.label, medians: {}, ratios: {} };
    for (const k of VARIANT_KEYS) {
      row.medians[k] = med(v.runs, k);
      row.ratios[k] = row.medians[k]! / med(criu, k);
    }
    return row;
  });
}

function variantTable(rows: VariantRow[]): string {
  const head = [
    "lazyd extra args",
    ...VARIANT_KEYS.map((k) =>
      METRICS.find((m) => m.key === k)!.label
        .replace(/^\(restore end -> (.*)\)$/, "$1")
    ),
  ];
  const cells = rows.map((r) => [
    r.variant,
    ...VARIANT_KEYS.map((k) => {
      const m = METRICS.find((x) => x.key === k)!;
      const v = r.medians[k]!;
      return Number.isFinite(v)
        ? `${v.toFixed(m.digits)} ${m.unit} (${r.ratios[k]!.toFixed(2)}x)`
        : "-";
    }),
  ]);
  const all = [head, ...cells];
  const w = head.map((_, i) => Math.max(...all.map((c) => c[i].length)));
  return all.map((c) =>
    "  " +
    c.map((x, i) => i === 0 ? x.padEnd(w[i]) : x.padStart(w[i])).join("  ")
      .trimEnd()
  ).join("\n");
}

async function pagesMiB(dir: string): Promise<number> {
  let bytes = 0;
  for await (const e of Deno.readDir(dir)) {
    if (e.name.startsWith("pages-")) {
      bytes += (await Deno.stat(join(dir, e.name))).size;
    }
  }
  return bytes / 2 ** 20;
}

function daemonCommand(o: Options, daemon: DaemonKind): string[] {
  return daemon === "criu" ? [CRIU, "lazy-pages"] : [...o.lazyd, ...o.extra];
}

/** One daemon configuration of a repetition. */
interface Contender {
  daemon: DaemonKind;
  variant?: string;
  command: string[];
}

/**
 * The daemons of repetition `rep`: CRIU, lazyd, then lazyd's variants, in
 * an order rotated by one each repetition (so with two contenders CRIU
 * goes first in odd repetitions, lazyd in even ones, as in local mode).
 */
function contenders(o: Options, rep: number): Contender[] {
  const all: Contender[] = [
    { daemon: "criu", command: daemonCommand(o, "criu") },
    { daemon: "lazyd", command: daemonCommand(o, "lazyd") },
    ...o.variants.map((v) => ({
      daemon: "lazyd" as const,
      variant: v.label,
      command: [...daemonCommand(o, "lazyd"), ...v.args],
    })),
  ];
  const k = rep % all.length;
  return [...all.slice(k), ...all.slice(0, k)];
}

async function benchRemoteConfig(
  o: Options,
  scratch: string,
  sizeMiB: number,
  access: string,
  out: ConfigResult,
): Promise<void> {
  const workloadExe = await buildWorkload();
  out.imagesMiB = sizeMiB;
  for (let rep = 0; rep < o.reps; rep++) {
    for (const c of contenders(o, rep)) {
      const r = await runRemote({
        daemon: c.daemon,
        rep,
        command: c.command,
        variant: c.variant,
        scratch: join(
          scratch,
          `remote-${sizeMiB}-${access}-${rep}-${c.daemon}${
            c.variant === undefined
              ? ""
              : `-v${o.variants.findIndex((v) => v.label === c.variant)}`
          }`,
        ),
        sizeMiB,
        workloadArgs: ACCESS[access].args,
        passAfter: ACCESS[access].passAfter,
        workloadExe,
        timeoutMs: 120_000 + 300 * sizeMiB,
      });
      out.runs.push(r);
      console.log(runLine(r));
    }
    if (o.ceiling) {
      const r = await runCeiling({
        scratch: join(scratch, `remote-${sizeMiB}-${access}-${rep}-ceiling`),
        sizeMiB,
        workloadArgs: ACCESS[access].args,
      });
      (out.ceiling ??= []).push(r);
      console.log(
        `  rep ${rep + 1} ceiling transfer ${r.transferS.toFixed(3)} s  ` +
          `close ${r.closeS.toFixed(3)} s  (${r.pages} pages)`,
      );
    }
  }
  out.summary = summarize(sizeMiB, out.runs, "remote");
  if (o.variants.length) out.variants = summarizeVariants(o, out.runs);
}

async function benchConfig(
  o: Options,
  scratch: string,
  sizeMiB: number,
  access: string,
  out: ConfigResult,
): Promise<void> {
  const base = join(scratch, `${sizeMiB}-${access}`);
  const wlDir = join(base, "workload");
  const dumpDir = join(base, "dump");
  await Deno.mkdir(wlDir, { recursive: true });
  const undoBase = onCleanup(() =>
    Deno.remove(base, { recursive: true }).catch(() => {})
  );
  const w = await startWorkload(wlDir, { sizeMiB, args: ACCESS[access].args });
  const undoW = onCleanup(() => w.kill());
  await dump(w, dumpDir); // which also ends the dumped tree
  undoW();
  out.imagesMiB = await pagesMiB(dumpDir);
  const dumpLog = Deno.readTextFileSync(w.log);
  const workloadExe = await buildWorkload();
  for (let rep = 0; rep < o.reps; rep++) {
    for (const c of contenders(o, rep)) {
      const r = await runOnce({
        daemon: c.daemon,
        rep,
        command: c.command,
        variant: c.variant,
        dumpDir,
        scratch: base,
        workload: w,
        workloadExe,
        dumpLog,
        timeoutMs: 120_000 + 300 * sizeMiB,
        passAfter: ACCESS[access].passAfter,
      });
      out.runs.push(r);
      console.log(runLine(r));
    }
  }
  // The floor the first pass cannot beat: every page present beforehand.
  out.reference = await runOnce({
    daemon: "plain",
    rep: 0,
    command: [],
    dumpDir,
    scratch: base,
    workload: w,
    workloadExe,
    dumpLog,
    timeoutMs: 120_000 + 300 * sizeMiB,
  });
  // What each daemon costs before it pages anything.
  out.idle = [];
  for (const daemon of ["criu", "lazyd"] as const) {
    out.idle.push(
      await idleRun({
        daemon,
        command: daemonCommand(o, daemon),
        dumpDir,
        scratch: base,
      }),
    );
  }
  out.summary = summarize(sizeMiB, out.runs, "local");
  if (o.variants.length) out.variants = summarizeVariants(o, out.runs);
  if (!o.keep) {
    await Deno.remove(base, { recursive: true });
    undoBase();
  }
}

/** Runs and prints one configuration. */
async function benchOne(
  o: Options,
  scratch: string,
  c: ConfigResult,
): Promise<void> {
  const { mode, sizeMiB: size, access } = c;
  const what = `${size} MiB, ${ACCESS[access].label} access, ${
    mode === "local" ? "local images" : "remote (lazy migration)"
  }`;
  console.log(`\n== ${what}`);
  if (mode === "local") await benchConfig(o, scratch, size, access, c);
  else await benchRemoteConfig(o, scratch, size, access, c);
  console.log(
    `\n${what}: medians of ${o.reps} rep(s), ` +
      `${c.imagesMiB!.toFixed(0)} MiB of pages, load now ${
        Deno.loadavg().map((x) => x.toFixed(2)).join(" ")
      }`,
  );
  console.log(table(c.summary!));
  if (c.variants) {
    console.log("  lazyd variants (medians, ratio to criu):");
    console.log(variantTable(c.variants));
  }
  if (c.idle) {
    console.log(
      "  idle daemon (start, listen, SIGTERM; no paging): " +
        c.idle.map((i) =>
          `${i.daemon} cpu ${i.cpuS.toFixed(2)} s, rss ${
            i.maxRssMiB.toFixed(1)
          } MiB, ` +
          `listening after ${i.startS.toFixed(3)} s`
        ).join("; "),
    );
  }
  if (c.ceiling) {
    const t = median(c.ceiling.map((x) => x.transferS));
    const drain = (d: DaemonKind) =>
      median(
        c.runs.filter((r) => r.daemon === d && !r.variant).map((r) =>
          r.lastPageS ?? NaN
        ),
      );
    console.log(
      `  ceiling (scripts/bench/ceiling.c: pipelined PS_IOV_GET, recv, ` +
        `UFFDIO_COPY, nothing else running; no restore): all pages in ` +
        `${t.toFixed(3)} s; restore end -> last page: criu ${
          (drain("criu") / t).toFixed(2)
        }x, lazyd ${(drain("lazyd") / t).toFixed(2)}x that`,
    );
  }
  const ref = c.reference;
  if (ref) {
    console.log(
      `  reference, plain criu restore (all pages present before the pass): ` +
        `restore ${ref.restoreS.toFixed(3)} s, pass ${
          ref.passMs.toFixed(1)
        } ms, ` +
        `p50 ${ref.p50Us.toFixed(1)} us, p99 ${ref.p99Us.toFixed(1)} us`,
    );
  }
}

async function main(): Promise<number> {
  let o: Options;
  try {
    o = parse(Deno.args);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    console.error(`bench: ${e.message}\n${USAGE}`);
    return 2;
  }
  Deno.chdir(ROOT);
  const lacking = missing(["root", "criu", "gcc", "uffd"]);
  if (lacking.length) {
    throw new Error(`this machine lacks ${lacking.join(", ")}`);
  }
  await ensureTime();
  raisePipeMaxSize();
  // Fill Deno's module cache so no run pays for it.
  await runOk(o.lazyd[0], [...o.lazyd.slice(1), "--version"]);

  const started = new Date();
  const scratch = await Deno.makeTempDir({ prefix: "lazyd-bench-" });
  if (!o.keep) {
    onCleanup(() => Deno.remove(scratch, { recursive: true }).catch(() => {}));
  }
  // Runs after the specific undo actions, before the removal: whatever was
  // still in flight when an error or a signal came.
  onCleanup(() => killUnder(scratch));
  const stop = async (sig: string) => {
    console.error(`\nbench: ${sig}, cleaning up`);
    await cleanupAll();
    Deno.exit(130);
  };
  const onInt = () => stop("SIGINT");
  const onTerm = () => stop("SIGTERM");
  Deno.addSignalListener("SIGINT", onInt);
  Deno.addSignalListener("SIGTERM", onTerm);

  const lazydCmd = [...o.lazyd, ...o.extra].join(" ");
  const tree = await gitState();
  console.log(
    `lazyd vs criu lazy-pages: mode ${o.modes.join(",")}, sizes ${
      o.sizes.join(",")
    } MiB, access ${
      o.access.join(",")
    }, ${o.reps} rep(s); lazyd = ${lazydCmd} (working tree ${tree}); ${navigator.hardwareConcurrency} CPUs, load ${
      Deno.loadavg().map((x) => x.toFixed(2)).join(" ")
    }`,
  );
  const configs: ConfigResult[] = [];
  let error: string | undefined;
  const t0 = performance.now();
  try {
    for (const mode of o.modes) {
      for (const size of o.sizes) {
        for (const access of o.access) {
          const c: ConfigResult = { mode, sizeMiB: size, access, runs: [] };
          configs.push(c);
          await benchOne(o, scratch, c);
        }
      }
    }
  } catch (e) {
    error = (e as Error).stack ?? String(e);
    console.error(`\n!!! BENCHMARK ERROR: ${(e as Error).message}`);
  } finally {
    await cleanupAll();
    Deno.removeSignalListener("SIGINT", onInt);
    Deno.removeSignalListener("SIGTERM", onTerm);
  }
  const totalS = (performance.now() - t0) / 1000;

  const dir = join(ROOT, ".cache", "bench");
  await Deno.mkdir(dir, { recursive: true });
  const file = join(
    dir,
    `results-${started.toISOString().replace(/[:.]/g, "-")}.json`,
  );
  const result = {
    started: started.toISOString(),
    totalS,
    error,
    options: { ...o, lazyd: lazydCmd },
    repository: tree,
    criu: CRIU,
    host: {
      cpus: navigator.hardwareConcurrency,
      kernel: Deno.osRelease(),
      loadavgAtEnd: Deno.loadavg(),
    },
    configs,
  };
  await Deno.writeTextFile(file, JSON.stringify(result, null, 2) + "\n");
  const all = configs.flatMap((c) => c.summary ?? []).filter((r) =>
    r.pass !== undefined
  );
  console.log(
    `\n${all.filter((r) => r.pass).length}/${all.length} targets met; ` +
      `${(totalS / 60).toFixed(1)} min; results in ${file}`,
  );
  if (error) {
    console.error(
      `!!! the benchmark FAILED (see above); partial results in ${file}`,
    );
    return 1;
  }
  return 0;
}

if (import.meta.main) {
  try {
    Deno.exit(await main());
  } catch (e) {
    console.error(`!!! BENCHMARK ERROR: ${(e as Error).message}`);
    await cleanupAll();
    Deno.exit(1);
  }
}
