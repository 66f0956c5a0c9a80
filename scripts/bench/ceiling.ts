/**
 * The transfer floor for `deno task bench --mode remote --ceiling`: the
 * same workload dumped with `criu dump --lazy-pages`, its lazy pages
 * fetched by `scripts/bench/ceiling.c` (pipelined PS_IOV_GET, recv,
 * UFFDIO_COPY into a region of its own; no restore, no daemon logic). What
 * a daemon cannot beat on this machine, whatever its language.
 *
 * @module
 */

import { join } from "node:path";
import {
  buildC,
  dumpLazy,
  startWorkload,
  tail,
  type Workload,
} from "../../tests/e2e/env.ts";
import { ImageDir, PE_LAZY, PE_PARENT } from "../../src/images/mod.ts";
import { onCleanup } from "./run.ts";

/** What one ceiling run measured. */
export interface CeilingResult {
  pages: number;
  /** First request sent -> last page copied. */
  transferS: number;
  /** PS_IOV_CLOSE sent -> status received. */
  closeS: number;
}

/** Request size and depth: the best of a sweep on this machine kind. */
const REQ_PAGES = 256;
const DEPTH = 16;

/** The PE_LAZY entries of every process of a lazy dump, as "pid vaddr pages" lines. */
function lazyRanges(dir: string): string {
  const images = ImageDir.open(dir);
  const lines: string[] = [];
  for (const p of images.pstree()) {
    if (!images.hasPagemap(p.pid)) continue;
    for (const e of images.pagemap(p.pid).entries) {
      if ((e.flags & PE_LAZY) && !(e.flags & PE_PARENT)) {
        lines.push(`${p.pid} ${e.vaddr} ${e.nrPages}`);
      }
    }
  }
  return lines.join("\n") + "\n";
}

/** One measured run in `scratch` (removed at the end). */
export async function runCeiling(
  o: { scratch: string; sizeMiB: number; workloadArgs: string[] },
): Promise<CeilingResult> {
  const exe = await buildC("scripts/bench/ceiling.c");
  const removeBase = () =>
    Deno.remove(o.scratch, { recursive: true }).catch(() => {});
  const undoBase = onCleanup(removeBase);
  let w: Workload | undefined;
  let d: Awaited<ReturnType<typeof dumpLazy>> | undefined;
  const stop = async () => {
    try {
      d?.proc.kill("SIGKILL");
    } catch { /* exited */ }
    await d?.result.catch(() => {});
    await w?.kill();
  };
  const undoProcs = onCleanup(stop);
  const dumpDir = join(o.scratch, "src");
  try {
    await Deno.mkdir(o.scratch, { recursive: true });
    w = await startWorkload(o.scratch, {
      sizeMiB: o.sizeMiB,
      args: o.workloadArgs,
    });
    d = await dumpLazy(w, dumpDir, { logLevel: 2 });
    const c = new Deno.Command(exe, {
      args: ["127.0.0.1", String(d.port), String(REQ_PAGES), String(DEPTH)],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const writer = c.stdin.getWriter();
    await writer.write(new TextEncoder().encode(lazyRanges(dumpDir)));
    await writer.close();
    const out = await c.output();
    if (!out.success) {
      throw new Error(
        `ceiling client failed: ${new TextDecoder().decode(out.stderr)}`,
      );
    }
    const st = await d.result;
    if (st.code !== 0) {
      throw new Error(
        `the source dump exited ${st.code}:\n${
          tail(join(dumpDir, "dump.log"))
        }`,
      );
    }
    d = undefined;
    return JSON.parse(new TextDecoder().decode(out.stdout)) as CeilingResult;
  } finally {
    await stop();
    undoProcs();
    await removeBase();
    undoBase();
  }
}
