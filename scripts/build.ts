/**
 * `deno task build`: builds dist/lazyd, the one file users copy to each
 * host, and dist/lazyd.buildinfo.
 *
 * 1. esbuild bundles mod.ts into dist/lazyd.bundle.js (scripts/build/bundle.ts).
 * 2. Mode "compile": when Deno's `denort` runtime for the pinned version is
 *    available (DENORT_BIN, the zip in $DENO_DIR, or a download by
 *    `deno compile`), a real `deno compile` of the bundle. A supplied
 *    runtime is validated first (scripts/build/denort.ts).
 * 3. Otherwise mode "self-contained": a static launcher plus the pinned
 *    Deno runtime from npm plus the bundle, in one file
 *    (scripts/build/self_contained.ts, scripts/build/launcher.c).
 *
 * Both modes run the bundle with the same flags (scripts/build/permissions.ts).
 *
 * Usage: deno run -A scripts/build.ts [--entry mod.ts] [--out dist/lazyd]
 *          [--mode auto|compile|self-contained] [--offline]
 *
 * --offline skips the download attempt of `deno compile`.
 *
 * @module
 */

import { dirname, join, relative, resolve } from "node:path";
import { bundle } from "./build/bundle.ts";
import { denortZipPath, findDenort } from "./build/denort.ts";
import {
  LOAD_FLAGS,
  PERMISSIONS,
  RUN_ARGS,
  V8_FLAGS,
} from "./build/permissions.ts";
import {
  assemble,
  buildLauncher,
  compressCached,
  ensureBuildPackages,
  sha256,
} from "./build/self_contained.ts";
import { exists } from "./_util.ts";

/** The repository root. */
export const ROOT = resolve(dirname(new URL(import.meta.url).pathname), "..");

/** Largest dist/lazyd the self-contained mode may produce (issue 5). */
export const MAX_SELF_CONTAINED_BYTES = 40_000_000;

/** How dist/lazyd was made. */
export type Mode = "compile" | "self-contained";

/** Options of {@linkcode build}. */
export interface BuildOptions {
  /** The program's entry module (default mod.ts). */
  entry?: string;
  /** The executable to write (default dist/lazyd); the bundle and the
   * build info go next to it as `<out>.bundle.js` and `<out>.buildinfo`. */
  out?: string;
  /** "auto" (default) prefers compile when denort can be had. */
  mode?: "auto" | Mode;
  /** Do not let `deno compile` try to download denort. */
  offline?: boolean;
  /** Print progress (default true). */
  verbose?: boolean;
}

/** What a build produced; also the content of `<out>.buildinfo`. */
export interface BuildInfo {
  /** The mode that was used. */
  mode: Mode;
  /** The Deno version of the runtime. */
  deno: string;
  /** The entry module, relative to the repository. */
  entry: string;
  /** Size of the executable in bytes. */
  size: number;
  /** Where the runtime came from. */
  runtimeSource: string;
  /** The Deno flags the bundle runs with. */
  flags: string[];
  /** Hex SHA-256 of the executable, the bundle, the runtime (denort or
   * deno) and, self-contained only, the launcher. */
  sha256: { lazyd: string; bundle: string; runtime: string; launcher?: string };
}

/** The Deno version package.json pins. */
export function pinnedDenoVersion(): string {
  const pkg = JSON.parse(Deno.readTextFileSync(join(ROOT, "package.json")));
  const v = pkg.devDependencies?.deno ?? pkg.dependencies?.deno;
  if (!/^\d+\.\d+\.\d+$/.test(v ?? "")) {
    throw new Error(`package.json pins no exact deno version`);
  }
  return v;
}

/** The pinned Deno binary from npm, checked to be that version. */
export async function npmDeno(version: string): Promise<string> {
  const bin = join(ROOT, "node_modules", "@deno", "linux-x64-glibc", "deno");
  let text = "";
  try {
    const out = await new Deno.Command(bin, {
      args: ["--version"],
      stdout: "piped",
    }).output();
    text = new TextDecoder().decode(out.stdout);
  } catch (e) {
    throw new Error(`${bin}: ${(e as Error).message} (run npm ci)`);
  }
  if (!text.startsWith(`deno ${version} `)) {
    throw new Error(
      `${bin} is not Deno ${version}: ${text.split("\n")[0]} (run npm ci)`,
    );
  }
  return bin;
}

/** Where built intermediates are kept across builds and checkouts. */
export function buildCacheDir(): string {
  const env = (n: string) => Deno.env.get(n);
  const dir = env("LAZYD_BUILD_CACHE") ??
    (env("XDG_CACHE_HOME")
      ? join(env("XDG_CACHE_HOME")!, "lazyd-build")
      : undefined) ??
    (env("HOME")
      ? join(env("HOME")!, ".cache", "lazyd-build")
      : join(ROOT, ".cache", "build"));
  Deno.mkdirSync(dir, { recursive: true });
  return dir;
}

async function writeAtomic(
  path: string,
  data: Uint8Array,
  mode: number,
): Promise<void> {
  const tmp = `${path}.${Deno.pid}.${crypto.randomUUID().slice(0, 8)}.tmp`;
  await Deno.writeFile(tmp, data, { mode });
  await Deno.chmod(tmp, mode); // the umask may have narrowed it
  await Deno.rename(tmp, path);
}

function readInfo(path: string): BuildInfo | undefined {
  try {
    return JSON.parse(Deno.readTextFileSync(path));
  } catch {
    return undefined;
  }
}

/** Builds the executable; returns what it built. */
export async function build(options: BuildOptions = {}): Promise<BuildInfo> {
  const say = options.verbose === false
    ? () => {}
    : (s: string) => console.log(`build: ${s}`);
  const entry = resolve(ROOT, options.entry ?? "mod.ts");
  const out = resolve(ROOT, options.out ?? "dist/lazyd");
  const bundlePath = `${out}.bundle.js`;
  const infoPath = `${out}.buildinfo`;
  const version = pinnedDenoVersion();
  const deno = await npmDeno(version);
  const cacheDir = buildCacheDir();

  // A supplied denort is validated before anything else: a wrong one is an
  // error, never a silent fallback.
  const wanted = options.mode ?? "auto";
  const denort = wanted === "self-contained"
    ? undefined
    : await findDenort(version, { extractDir: join(cacheDir, "denort") });

  Deno.mkdirSync(dirname(out), { recursive: true });
  await bundle(relative(ROOT, entry), bundlePath, { root: ROOT });
  const bundleBytes = await Deno.readFile(bundlePath);
  const bundleSha = await sha256(bundleBytes);
  say(
    `bundled ${relative(ROOT, entry)} into ${relative(ROOT, bundlePath)} (${
      kb(bundleBytes.length)
    })`,
  );

  let info: BuildInfo | undefined;
  if (wanted !== "self-contained" && (denort || !options.offline)) {
    info = await compile({
      deno,
      denort,
      version,
      entry,
      out,
      bundlePath,
      bundleSha,
      say,
    });
    if (!info && wanted === "compile") {
      throw new Error("mode compile: denort is not available (set DENORT_BIN)");
    }
  } else if (wanted === "compile") {
    throw new Error(
      "mode compile: no denort supplied and --offline forbids the download",
    );
  }
  info ??= await selfContained({
    deno,
    version,
    entry,
    out,
    bundleBytes,
    bundleSha,
    cacheDir,
    say,
  });
  await writeAtomic(
    infoPath,
    new TextEncoder().encode(JSON.stringify(info, null, 2) + "\n"),
    0o644,
  );
  say(
    `built ${relative(ROOT, out)}: mode ${info.mode}, Deno ${info.deno}, ${
      mb(info.size)
    }` +
      ` (runtime: ${info.runtimeSource})`,
  );
  return info;
}

interface StepArgs {
  deno: string;
  version: string;
  entry: string;
  out: string;
  bundleSha: string;
  say: (s: string) => void;
}

/** `deno compile`; undefined when denort could not be downloaded. */
async function compile(
  a: StepArgs & {
    denort?: { path: string; source: string; bytes: Uint8Array };
    bundlePath: string;
  },
): Promise<BuildInfo | undefined> {
  const flags = [...LOAD_FLAGS, ...PERMISSIONS, ...V8_FLAGS];
  const tmp = `${a.out}.${Deno.pid}.compile`;
  a.say(
    `deno compile with ${a.denort ? a.denort.source : "a downloaded denort"}`,
  );
  const env: Record<string, string> = { DENO_NO_UPDATE_CHECK: "1" };
  if (a.denort) env.DENORT_BIN = a.denort.path;
  const r = await new Deno.Command(a.deno, {
    args: [
      "compile",
      ...flags,
      "--target",
      "x86_64-unknown-linux-gnu",
      "--output",
      tmp,
      a.bundlePath,
    ],
    env,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const err = new TextDecoder().decode(r.stderr);
  // Without a supplied denort, deno compile downloads the zip into
  // $DENO_DIR; if it is not there afterwards, the download failed.
  const zip = denortZipPath(a.version, (n) => Deno.env.get(n));
  const downloaded = !a.denort && zip !== undefined && exists(zip);
  if (!r.success) {
    if (!a.denort && !downloaded) {
      const why = err.split("\n").find((l) =>
        /error sending request|dns error/.test(l)
      ) ??
        lastLine(err);
      a.say(
        `denort ${a.version} is not available: ${why.replace(/^\s*\d+: /, "")}`,
      );
      return undefined;
    }
    throw new Error(`deno compile failed:\n${err}`);
  }
  // Deno fetched it from its own release host: recorded, not second-guessed.
  const runtime = a.denort?.bytes ??
    (downloaded ? await Deno.readFile(zip!) : undefined);
  const source = a.denort?.source ??
    (downloaded
      ? `downloaded by deno compile (${zip}; hash of the zip)`
      : "unknown");
  await Deno.chmod(tmp, 0o755);
  await Deno.rename(tmp, a.out);
  const exe = await Deno.readFile(a.out);
  return {
    mode: "compile",
    deno: a.version,
    entry: relative(ROOT, a.entry),
    size: exe.length,
    runtimeSource: source,
    flags,
    sha256: {
      lazyd: await sha256(exe),
      bundle: a.bundleSha,
      runtime: runtime ? await sha256(runtime) : "unknown",
    },
  };
}

/** The launcher + runtime + bundle file. */
async function selfContained(
  a: StepArgs & { bundleBytes: Uint8Array; cacheDir: string },
): Promise<BuildInfo> {
  a.say(
    "mode self-contained: static launcher + zstd-compressed Deno runtime from npm + bundle",
  );
  await ensureBuildPackages();
  const runtimeBytes = await Deno.readFile(a.deno);
  const runtimeSha = await sha256(runtimeBytes);
  const launcherPath = await buildLauncher(a.cacheDir);
  const launcher = await Deno.readFile(launcherPath);
  const launcherSha = await sha256(launcher);

  // Reuse an up-to-date executable: same inputs and intact output.
  const old = readInfo(`${a.out}.buildinfo`);
  if (
    old?.mode === "self-contained" && old.sha256.bundle === a.bundleSha &&
    old.sha256.runtime === runtimeSha && old.sha256.launcher === launcherSha &&
    old.entry === relative(ROOT, a.entry)
  ) {
    try {
      if ((await sha256(await Deno.readFile(a.out))) === old.sha256.lazyd) {
        a.say(`${relative(ROOT, a.out)} is up to date`);
        return old;
      }
    } catch { /* missing: rebuild */ }
  }

  const runtimeZst = await compressCached(a.deno, runtimeSha, {
    cacheDir: a.cacheDir,
    runtime: true,
  });
  const bundleZst = await compressCached(`${a.out}.bundle.js`, a.bundleSha, {
    cacheDir: a.cacheDir,
    runtime: false,
  });
  const exe = assemble(
    launcher,
    {
      zst: await Deno.readFile(runtimeZst),
      size: runtimeBytes.length,
      name: `deno-${a.version}-${runtimeSha.slice(0, 16)}`,
    },
    {
      zst: await Deno.readFile(bundleZst),
      size: a.bundleBytes.length,
      name: `lazyd-${a.bundleSha.slice(0, 16)}.js`,
    },
  );
  if (exe.length > MAX_SELF_CONTAINED_BYTES) {
    throw new Error(
      `${a.out} would be ${mb(exe.length)}, over the 40 MB limit`,
    );
  }
  await writeAtomic(a.out, exe, 0o755);
  return {
    mode: "self-contained",
    deno: a.version,
    entry: relative(ROOT, a.entry),
    size: exe.length,
    runtimeSource: `npm @deno/linux-x64-glibc ${a.version}`,
    flags: [...RUN_ARGS.slice(1)],
    sha256: {
      lazyd: await sha256(exe),
      bundle: a.bundleSha,
      runtime: runtimeSha,
      launcher: launcherSha,
    },
  };
}

function lastLine(s: string): string {
  return s.trim().split("\n").at(-1) ?? "";
}

function kb(n: number): string {
  return `${(n / 1024).toFixed(0)} KiB`;
}

function mb(n: number): string {
  return `${(n / 1e6).toFixed(1)} MB`;
}

const USAGE = "usage: deno task build [--entry mod.ts] [--out dist/lazyd] " +
  "[--mode auto|compile|self-contained] [--offline]";

function parseArgs(args: string[]): BuildOptions {
  const o: BuildOptions = {};
  for (let i = 0; i < args.length; i++) {
    const [flag, inline] = args[i].split("=", 2) as [
      string,
      string | undefined,
    ];
    const value = () => inline ?? args[++i];
    if (flag === "--entry") o.entry = value();
    else if (flag === "--out") o.out = value();
    else if (flag === "--mode") {
      const m = value();
      if (m !== "auto" && m !== "compile" && m !== "self-contained") {
        throw new Error(
          `--mode must be auto, compile or self-contained, not ${m}`,
        );
      }
      o.mode = m;
    } else if (flag === "--offline") o.offline = true;
    else if (flag === "--help") {
      console.log(USAGE);
      Deno.exit(0);
    } else throw new Error(`unknown argument ${args[i]}`);
  }
  return o;
}

if (import.meta.main) {
  try {
    await build(parseArgs(Deno.args));
  } catch (e) {
    console.error(`build: error: ${(e as Error).message}`);
    Deno.exit(1);
  }
}
