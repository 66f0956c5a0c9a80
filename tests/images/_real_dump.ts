// Real CRIU 4.1.1 dumps of the e2e workload, for the decoding and fuzz
// tests: a plain `criu dump` and a `criu dump --lazy-pages` whose images are
// copied once its page server listens (the lazy pages stay on the source).
import { join } from "node:path";
import {
  copyImages,
  dump,
  dumpLazy,
  scratch,
  startWorkload,
} from "../e2e/env.ts";

/** Where the dumps are. */
export interface RealDumps {
  /** Scratch directory holding everything; remove it when done. */
  base: string;
  /** Images of a plain dump. */
  plain: string;
  /** Images of a `--lazy-pages` dump. */
  lazy: string;
}

/**
 * Makes both dumps (needs root, CRIU and gcc) of a root, one child and a
 * zombie, each live process with `sizeMiB` (default 8) of its own.
 */
export async function makeRealDumps(
  options: { sizeMiB?: number } = {},
): Promise<RealDumps> {
  const WORKLOAD = { sizeMiB: options.sizeMiB ?? 8, args: ["-c", "1", "-z"] };
  const base = scratch("images");
  const plain = join(base, "plain");
  const lazy = join(base, "lazy");
  for (const name of ["w1", "w2"]) Deno.mkdirSync(join(base, name));

  const w1 = await startWorkload(join(base, "w1"), WORKLOAD);
  try {
    await dump(w1, plain);
  } finally {
    await w1.kill();
  }

  const w2 = await startWorkload(join(base, "w2"), WORKLOAD);
  try {
    const source = await dumpLazy(w2, join(base, "lazy-src"));
    try {
      await copyImages(join(base, "lazy-src"), lazy);
    } finally {
      await source.stop();
    }
  } finally {
    await w2.kill();
  }
  return { base, plain, lazy };
}
