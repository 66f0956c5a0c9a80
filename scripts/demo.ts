/**
 * The README's main job: a lazy migration of a sample process on this host.
 *
 * A 256 MiB memory-verifying workload (tests/e2e/workload.c) is started in
 * its own PID namespace and checkpointed with `criu dump`; `lazyd inspect`
 * shows what the images hold; `lazyd -D` serves them to `criu restore
 * --lazy-pages`; the restored process checks every word of its memory and
 * lazyd prints its statistics.
 *
 * Usage: deno run -A scripts/demo.ts [--size MiB] [--keep]
 *
 * @module
 */
import { parseArgs } from "node:util";
import { join } from "node:path";
import {
  copyImages,
  dump,
  restoreLazy,
  ROOT,
  run,
  scratch,
  startDaemon,
  startWorkload,
  verifyRestored,
} from "../tests/e2e/env.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    size: { type: "string", default: "256" },
    keep: { type: "boolean" },
  },
});
const size = Number(values.size);
const lazyd = [Deno.execPath(), "run", "--allow-all", join(ROOT, "mod.ts")];
const dir = scratch("demo");
const step = (s: string) => console.log(`\n== ${s}`);

try {
  step(`start a ${size} MiB workload that checks its own memory`);
  const w = await startWorkload(dir, { sizeMiB: size, args: ["-c", "1"] });
  console.log(`workload tree root: host pid ${w.pid}`);

  step("criu dump (the source side)");
  await dump(w, join(dir, "src"));
  await copyImages(join(dir, "src"), join(dir, "dst"));

  step("lazyd inspect (what a lazy restore involves)");
  const ins = await run(lazyd[0], [
    ...lazyd.slice(1),
    "inspect",
    "-D",
    join(dir, "dst"),
  ]);
  console.log(ins.stdout.trimEnd());
  if (ins.code !== 0) throw new Error(`lazyd inspect exited ${ins.code}`);

  step("lazyd -D serves the pages; criu restore --lazy-pages restores at once");
  const d = await startDaemon(
    [
      ...lazyd,
      "-D",
      join(dir, "dst"),
      "-v3",
      "-o",
      "lazyd.log",
      "--stats-file",
      "stats.json",
    ],
    join(dir, "dst"),
  );
  const t0 = performance.now();
  const pid = await restoreLazy(join(dir, "dst"));
  console.log(
    `restored in ${(performance.now() - t0).toFixed(0)} ms: host pid ${pid}`,
  );

  step("the restored processes verify every word of their memory");
  for (const l of await verifyRestored(w, pid)) console.log(l);
  const r = await d.result;
  console.log(
    `lazyd exited ${r.code} after ${(performance.now() - t0).toFixed(0)} ms`,
  );
  const stats = JSON.parse(
    Deno.readTextFileSync(join(dir, "dst", "stats.json")),
  );
  for (const p of stats.processes) {
    const c = p.counters;
    console.log(
      `  process ${p.label}: ${p.end}, ${c.copiedPages}/${c.totalPages} lazy pages copied ` +
        `(${c.faults} faults, ${c.backgroundPages} pages in the background)`,
    );
  }
  if (r.code !== 0) throw new Error("lazyd failed");
  console.log("\nOK: lazy restore verified");
} finally {
  if (values.keep) console.log(`kept ${dir}`);
  else Deno.removeSync(dir, { recursive: true });
}
