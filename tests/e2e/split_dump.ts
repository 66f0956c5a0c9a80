/**
 * Turns one real dump into a pre-copy style chain: a parent directory with
 * all the data, and a child whose pagemaps mark part of the pages
 * `PE_PARENT` (no data in the child), the way `criu dump
 * --prev-images-dir` marks pages unchanged since a pre-dump. This machine's
 * kernel has no soft-dirty tracking, so real pre-dumps run elsewhere; this
 * gives the daemon the same shapes of input from a real process.
 *
 * @module
 */
import { join } from "node:path";
import {
  ImageDir,
  PAGE_SIZE,
  pagemapRecords,
  PE_LAZY,
  PE_PARENT,
  PE_PRESENT,
  type SyntheticEntry,
  writeImage,
} from "../../src/images/mod.ts";
import { runOk } from "./env.ts";

/** What the split did, for the test's expectations. */
export interface SplitResult {
  /** The child directory (its `parent` link points at the parent). */
  child: string;
  /** The parent directory (the original dump, untouched). */
  parent: string;
  /** Lazy pages whose data is in the child (PE_LAZY|PE_PRESENT). */
  lazyHere: number;
  /** Lazy pages whose data is only in the parent (PE_LAZY|PE_PARENT). */
  lazyInParent: number;
  /** Pages restore takes from the parent (PE_PARENT only). */
  parentOnly: number;
}

/** Options of {@linkcode splitDump}. */
export interface SplitOptions {
  /** Pages per slice; slices take turns in the pattern. */
  slice: number;
  /**
   * What each slice of a lazy entry becomes, in turn: "lazy" keeps it lazy
   * with data here, "parent" makes it a hole filled by restore from the
   * parent, "lazy-parent" makes it lazy with its data only in the parent
   * (CRIU never writes that, but the restorer would skip it, so a daemon
   * must deliver it from the parent chain).
   */
  pattern: ("lazy" | "parent" | "lazy-parent")[];
}

/**
 * Copies dump `dump` to `parent` (as is) and `child` (pagemaps split per
 * `options`, page data only for what stays here), with `child/parent`
 * linking to the parent like CRIU's relative link.
 */
export async function splitDump(
  dump: string,
  dirs: { parent: string; child: string },
  options: SplitOptions,
): Promise<SplitResult> {
  await runOk("cp", ["-a", dump, dirs.parent]);
  await runOk("cp", ["-a", dump, dirs.child]);
  const src = ImageDir.open(dirs.parent);
  const out: SplitResult = {
    child: dirs.child,
    parent: dirs.parent,
    lazyHere: 0,
    lazyInParent: 0,
    parentOnly: 0,
  };
  for (const { pid } of src.pstree()) {
    if (!src.hasPagemap(pid)) continue;
    const pm = src.pagemap(pid);
    const pagesFile = await Deno.open(src.file(`pages-${pm.pagesId}.img`));
    const entries: SyntheticEntry[] = [];
    const data: Uint8Array[] = [];
    for (const e of pm.entries) {
      const lazy = (e.flags & PE_LAZY) !== 0;
      for (let i = 0, k = 0; i < e.nrPages; i += options.slice, k++) {
        const n = Math.min(options.slice, e.nrPages - i);
        const vaddr = e.vaddr + i * PAGE_SIZE;
        const role = lazy
          ? options.pattern[k % options.pattern.length]
          : "lazy";
        if (role === "parent") {
          entries.push({ vaddr, nrPages: n, flags: PE_PARENT });
          out.parentOnly += n;
        } else if (role === "lazy-parent") {
          entries.push({ vaddr, nrPages: n, flags: PE_LAZY | PE_PARENT });
          out.lazyInParent += n;
        } else {
          entries.push({ vaddr, nrPages: n, flags: e.flags });
          if (lazy) out.lazyHere += n;
          if (e.flags & PE_PRESENT) {
            const buf = new Uint8Array(n * PAGE_SIZE);
            await pagesFile.seek(
              e.dataOffset + i * PAGE_SIZE,
              Deno.SeekMode.Start,
            );
            let got = 0;
            while (got < buf.length) {
              const r = await pagesFile.read(buf.subarray(got));
              if (r === null) {
                throw new Error(`short pages file for pid ${pid}`);
              }
              got += r;
            }
            data.push(buf);
          }
        }
      }
    }
    pagesFile.close();
    writeImage(join(dirs.child, `pagemap-${pid}.img`), {
      kind: "pagemap",
      records: pagemapRecords(entries, { pagesId: pm.pagesId }),
    });
    const f = await Deno.open(join(dirs.child, `pages-${pm.pagesId}.img`), {
      write: true,
      truncate: true,
    });
    for (const d of data) await f.write(d);
    f.close();
  }
  const rel = join("..", dirs.parent.split("/").pop()!);
  await Deno.symlink(rel, join(dirs.child, "parent"));
  return out;
}
