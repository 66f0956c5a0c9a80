/**
 * Lazy migration over a delayed link: lazyd against `criu lazy-pages`.
 *
 * Boots the guest of `scripts/vm/guest.ts` once (its Debian kernel has
 * `sch_netem`) and, for each one-way delay, puts netem on both ends of the
 * veth pair between the source (root namespace) and the destination (second
 * namespace), then migrates a workload lazily (`criu dump --lazy-pages`,
 * `rsync -a`, the daemon with `--page-server`, `criu restore --lazy-pages`)
 * with each daemon, and prints the total transfer time (restore start to
 * the daemon's exit) and the ratio lazyd/CRIU. Memory is verified after
 * every run.
 *
 * Usage: deno run -A scripts/vm/delay_bench.ts [--delays 5,20] [--size MiB]
 *        [--reps N] [--json] [--lazyd-args A,B,...]
 * LAZYD_CMD, when set, is the lazyd command in the guest too (e.g. a built
 * dist/lazyd, or `deno run` with other flags).
 *
 * Under TCG (no /dev/kvm) the guest is 10-50x slower than the host: compare
 * the two daemons with each other, not with numbers measured elsewhere.
 *
 * @module
 */

import { join } from "node:path";
import { buildWorkload } from "../../tests/e2e/env.ts";
import { parseResults, ROOT, runInGuest } from "./guest.ts";
import type { DelayResult } from "./scenarios.ts";

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

if (import.meta.main) {
  const args = [...Deno.args];
  let delays = [5, 20];
  let size = 64;
  let reps = 1;
  let json = false;
  let lazydArgs = "";
  while (args.length) {
    const a = args.shift()!;
    if (a === "--delays") delays = args.shift()!.split(",").map(Number);
    else if (a === "--size") size = Number(args.shift());
    else if (a === "--reps") reps = Number(args.shift());
    else if (a === "--json") json = true;
    else if (a === "--lazyd-args") lazydArgs = args.shift()!;
    else {
      console.error(
        "usage: delay_bench.ts [--delays 5,20] [--size MiB] [--reps N] [--json] [--lazyd-args A,B,...]",
      );
      Deno.exit(2);
    }
  }
  await buildWorkload(); // the checkout is read-only in the guest
  const loadBefore = Deno.loadavg().join(" ");
  const script = [
    Deno.execPath(),
    "run",
    "-A",
    join(ROOT, "scripts", "vm", "scenarios.ts"),
    "delay",
    ...delays.map(String),
    "--size",
    String(size),
    "--reps",
    String(reps),
    ...(lazydArgs ? ["--lazyd-args", `'${lazydArgs}'`] : []),
  ].join(" ");
  const lazydCmd = Deno.env.get("LAZYD_CMD");
  const r = await runInGuest(script, {
    timeoutSec: 600 + delays.length * reps * size * 4,
    memMiB: Math.max(2048, size * 16),
    env: lazydCmd ? { LAZYD_CMD: lazydCmd } : {},
  });
  const results = parseResults<DelayResult>(r.output);
  if (json) console.log(JSON.stringify({ vm: r, results }, null, 2));
  console.log(
    `guest: ${r.accel}, kernel ${r.release}, boot ${r.bootMs ?? "?"} ms, ` +
      `whole run ${(r.durationMs / 1000).toFixed(1)} s; host load ` +
      `before ${loadBefore}, after ${Deno.loadavg().join(" ")} ` +
      "(emulated guests slow down a lot on a busy host)",
  );
  console.log(
    `lazy migration of ${size} MiB over a veth with netem delay on both ends ` +
      `(restore start -> daemon exit, median of ${reps})`,
  );
  console.log("one-way delay   criu lazy-pages   lazyd      lazyd/CRIU");
  let failed = r.code !== 0;
  for (const d of delays) {
    const of = (daemon: string) =>
      results.filter((x) => x.delayMs === d && x.daemon === daemon);
    const c = of("criu");
    const l = of("lazyd");
    const bad = [...c, ...l].filter((x) => !x.ok);
    for (const b of bad) {
      console.log(`  ${b.daemon} at ${d} ms failed: ${b.error}`);
    }
    if (bad.length || !c.length || !l.length) {
      failed = true;
      continue;
    }
    const cm = median(c.map((x) => x.transferMs!));
    const lm = median(l.map((x) => x.transferMs!));
    console.log(
      `${String(d).padStart(6)} ms     ${
        (cm / 1000).toFixed(2).padStart(8)
      } s` +
        `        ${(lm / 1000).toFixed(2).padStart(6)} s   ${
          (lm / cm).toFixed(2)
        }x`,
    );
  }
  if (failed) {
    console.error(
      `delay_bench: failed (guest status ${r.code}); output:\n${r.output}`,
    );
  }
  Deno.exit(failed ? 1 : 0);
}
