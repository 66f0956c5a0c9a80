/**
 * `deno task bench:start`: size, cold and warm start of dist/lazyd against
 * `deno run` of the same bundle with the same flags (the target is a warm
 * start within 1.2x of `deno run`).
 *
 * Cold: dist/lazyd with an empty cache directory (it unpacks the runtime),
 * `deno run` with an empty DENO_DIR. Warm: both caches filled. Every run is
 * `<cmd> --version` under `env -i`. Uses hyperfine when it is installed
 * (apt-get install hyperfine), else a plain timing loop.
 *
 * Usage: deno run -A scripts/build/bench_start.ts [--entry mod.ts]
 *          [--out dist/lazyd] [--runs 20]
 *
 * @module
 */

import { join, resolve } from "node:path";
import { build, npmDeno, pinnedDenoVersion, ROOT } from "../build.ts";
import { RUN_ARGS } from "./permissions.ts";

interface Stat {
  mean: number;
  stddev: number;
}

function onPath(cmd: string): boolean {
  return (Deno.env.get("PATH") ?? "").split(":").some((d) => {
    try {
      return Deno.statSync(join(d, cmd)).isFile;
    } catch {
      return false;
    }
  });
}

/** Times `cmd` (seconds); `reset` runs before every timed run if given. */
async function measure(
  cmd: string[],
  options: { runs: number; reset?: string },
): Promise<Stat> {
  if (onPath("hyperfine") && cmd.every((a) => !/\s/.test(a))) {
    const json = await Deno.makeTempFile({ suffix: ".json" });
    const args = [
      "-N",
      "--style",
      "none",
      "--runs",
      String(options.runs),
      "--export-json",
      json,
    ];
    if (options.reset) args.push("--prepare", `rm -rf ${options.reset}`);
    else args.push("--warmup", "3");
    const out = await new Deno.Command("hyperfine", {
      args: [...args, cmd.join(" ")],
      stdout: "null",
      stderr: "inherit",
    }).output();
    if (!out.success) throw new Error(`hyperfine failed for ${cmd.join(" ")}`);
    const r = JSON.parse(Deno.readTextFileSync(json)).results[0];
    Deno.removeSync(json);
    return { mean: r.mean, stddev: r.stddev };
  }
  const times: number[] = [];
  const warmup = options.reset ? 0 : 3;
  for (let i = 0; i < warmup + options.runs; i++) {
    if (options.reset) {
      try {
        Deno.removeSync(options.reset, { recursive: true });
      } catch { /* already empty */ }
    }
    const t = performance.now();
    const out = await new Deno.Command(cmd[0], {
      args: cmd.slice(1),
      stdout: "null",
      stderr: "inherit",
    }).output();
    if (!out.success) throw new Error(`${cmd.join(" ")} failed`);
    if (i >= warmup) times.push((performance.now() - t) / 1000);
  }
  const mean = times.reduce((a, b) => a + b, 0) / times.length;
  const sd = Math.sqrt(
    times.reduce((a, b) => a + (b - mean) ** 2, 0) / times.length,
  );
  return { mean, stddev: sd };
}

function parse(args: string[]): { entry?: string; out?: string; runs: number } {
  const o: { entry?: string; out?: string; runs: number } = { runs: 20 };
  for (let i = 0; i < args.length; i++) {
    if (args[i] === "--entry") o.entry = args[++i];
    else if (args[i] === "--out") o.out = args[++i];
    else if (args[i] === "--runs") o.runs = Number(args[++i]);
    else throw new Error(`unknown argument ${args[i]}`);
  }
  return o;
}

const ms = (s: Stat) =>
  `${(s.mean * 1000).toFixed(1)} ms ± ${(s.stddev * 1000).toFixed(1)}`;

if (import.meta.main) {
  const opts = parse(Deno.args);
  const info = await build({ entry: opts.entry, out: opts.out });
  const exe = resolve(ROOT, opts.out ?? "dist/lazyd");
  const bundle = `${exe}.bundle.js`;
  const deno = await npmDeno(pinnedDenoVersion());
  const scratch = await Deno.makeTempDir({ prefix: "lazyd-bench-" });
  try {
    const cache = (name: string) => join(scratch, name);
    const lazyd = (
      dir: string,
    ) => ["env", "-i", `LAZYD_CACHE_DIR=${dir}`, exe, "--version"];
    const denoRun = (dir: string) => [
      "env",
      "-i",
      `DENO_DIR=${dir}`,
      deno,
      ...RUN_ARGS,
      bundle,
      "--version",
    ];
    const cold = Math.max(3, Math.floor(opts.runs / 4));
    const r = {
      lazydCold: await measure(lazyd(cache("cold")), {
        runs: cold,
        reset: cache("cold"),
      }),
      denoCold: await measure(denoRun(cache("dcold")), {
        runs: cold,
        reset: cache("dcold"),
      }),
      lazydWarm: await measure(lazyd(cache("warm")), { runs: opts.runs }),
      denoWarm: await measure(denoRun(cache("dwarm")), { runs: opts.runs }),
    };
    console.log(
      `dist/lazyd: mode ${info.mode}, Deno ${info.deno}, ${
        (info.size / 1e6).toFixed(1)
      } MB`,
    );
    console.log(
      `cold start  lazyd ${ms(r.lazydCold)}   deno run ${
        ms(r.denoCold)
      }   ratio ${(r.lazydCold.mean / r.denoCold.mean).toFixed(2)}x`,
    );
    const warm = r.lazydWarm.mean / r.denoWarm.mean;
    console.log(
      `warm start  lazyd ${ms(r.lazydWarm)}   deno run ${
        ms(r.denoWarm)
      }   ratio ${warm.toFixed(2)}x (target <= 1.2x: ${
        warm <= 1.2 ? "met" : "MISSED"
      })`,
    );
  } finally {
    await Deno.remove(scratch, { recursive: true });
  }
}
