/**
 * The README's main job: a lazy migration of a sample process between two
 * "hosts" on this machine.
 *
 * A 256 MiB memory-verifying workload (tests/e2e/workload.c, a parent and
 * a child process) runs on the source side, the root network namespace.
 * `criu dump --lazy-pages` checkpoints it and serves its memory from a page
 * server; the images are copied to the destination, `lazyd inspect` shows
 * them, and lazyd, in a second network namespace joined by a veth pair,
 * fetches the pages over the network while `criu restore --lazy-pages`
 * runs the processes. They then check every word of their memory.
 *
 * Usage: deno run -A scripts/demo.ts [--size MiB] [--local] [--keep]
 *   --local  restore from local images instead (plain dump, `lazyd -D`)
 *
 * @module
 */
import { parseArgs } from "node:util";
import { join } from "node:path";
import {
  copyImages,
  dump,
  dumpLazy,
  lazydCommand,
  type LazyDump,
  makeVethPair,
  restoreLazy,
  run,
  scratch,
  startDaemon,
  startWorkload,
  verifyRestored,
  type VethPair,
} from "../tests/e2e/env.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    size: { type: "string", default: "256" },
    local: { type: "boolean" },
    keep: { type: "boolean" },
  },
});
const size = Number(values.size);
const lazyd = lazydCommand();
const dir = scratch("demo");
const step = (s: string) => console.log(`\n== ${s}`);
let net: VethPair | undefined;
let src: LazyDump | undefined;

try {
  step(
    `start a ${size} MiB workload (parent + child) that checks its own memory`,
  );
  const w = await startWorkload(dir, { sizeMiB: size, args: ["-c", "1"] });
  console.log(`workload tree root: host pid ${w.pid}`);

  let remote: string[] = [];
  if (values.local) {
    step("criu dump (the source side)");
    await dump(w, join(dir, "src"));
  } else {
    net = await makeVethPair();
    step(
      `criu dump --lazy-pages: memory stays on the source, served on ${net.source}`,
    );
    src = await dumpLazy(w, join(dir, "src"), { address: net.source });
    remote = [
      "--page-server",
      "--address",
      net.source,
      "--port",
      String(src.port),
    ];
  }
  await copyImages(join(dir, "src"), join(dir, "dst"));

  step("lazyd inspect (what a lazy restore of the copied images involves)");
  const ins = await run(lazyd[0], [
    ...lazyd.slice(1),
    "inspect",
    "-D",
    join(dir, "dst"),
  ]);
  console.log(ins.stdout.trimEnd());
  if (ins.code !== 0) throw new Error(`lazyd inspect exited ${ins.code}`);

  step(
    net
      ? `lazyd in network namespace ${net.ns} (${net.destination}) + criu restore --lazy-pages`
      : "lazyd -D + criu restore --lazy-pages",
  );
  const d = await startDaemon([
    ...(net?.exec ?? []),
    ...lazyd,
    "-D",
    join(dir, "dst"),
    "-v3",
    "-o",
    "lazyd.log",
    "--stats-file",
    "stats.json",
    ...remote,
  ], join(dir, "dst"));
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
  if (stats.source.remotePagesReceived !== undefined) {
    console.log(
      `  ${stats.source.remotePagesReceived} pages came over the network in ${stats.source.remoteRequests} requests`,
    );
  }
  if (r.code !== 0) throw new Error("lazyd failed");
  if (src && (await src.result).code !== 0) {
    throw new Error("the source's criu dump failed");
  }
  console.log(`\nOK: lazy ${net ? "migration" : "restore"} verified`);
} finally {
  await src?.stop();
  await net?.remove();
  if (values.keep) console.log(`kept ${dir}`);
  else Deno.removeSync(dir, { recursive: true });
}
