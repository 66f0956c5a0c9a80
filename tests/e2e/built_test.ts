/**
 * The built executable as users get it: dist/lazyd copied into an empty
 * directory and run with `env -i` (no PATH, no HOME, no Deno), against real
 * CRIU: `inspect` of a real dump, and a real lazy restore it serves.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { buildOnce } from "../build/build_helper.ts";
import {
  copyImages,
  dump,
  e2eTest,
  restoreLazy,
  run,
  scratch,
  startDaemon,
  startWorkload,
  verifyRestored,
} from "./env.ts";

e2eTest(
  "built dist/lazyd, copied and run with env -i: inspect and a lazy restore",
  {
    needs: ["root", "criu", "gcc", "uffd"],
  },
  async () => {
    const dir = scratch("built");
    const exe = join(dir, "bin", "lazyd");
    Deno.mkdirSync(join(dir, "bin"));
    Deno.copyFileSync(await buildOnce(), exe);
    Deno.chmodSync(exe, 0o755);
    const w = await startWorkload(dir, { sizeMiB: 32, args: ["-c", "1"] });
    try {
      await dump(w, join(dir, "src"));
      await copyImages(join(dir, "src"), join(dir, "dst"));

      const ins = await run("env", [
        "-i",
        exe,
        "inspect",
        "-D",
        join(dir, "dst"),
        "--json",
      ]);
      assert.equal(ins.code, 0, ins.stderr);
      const report = JSON.parse(ins.stdout);
      assert.equal(report.processes.length, 2);
      assert.ok(report.localOk);
      assert.ok(
        report.processes.every((p: { lazyPages: number }) =>
          p.lazyPages >= 32 * 256
        ),
      );

      const d = await startDaemon(
        [
          "env",
          "-i",
          exe,
          "-D",
          join(dir, "dst"),
          "-v4",
          "-o",
          "lazyd.log",
          "--stats-file",
          "stats.json",
        ],
        join(dir, "dst"),
      );
      const pid = await restoreLazy(join(dir, "dst"));
      await verifyRestored(w, pid);
      const r = await d.result;
      assert.equal(r.code, 0, new TextDecoder().decode(r.stderr));
      const stats = JSON.parse(
        Deno.readTextFileSync(join(dir, "dst", "stats.json")),
      );
      for (const p of stats.processes) {
        assert.equal(p.end, "complete");
        assert.equal(p.counters.copiedPages, p.counters.totalPages);
      }
      Deno.removeSync(dir, { recursive: true });
    } catch (e) {
      console.error(`kept ${dir}`);
      await w.kill();
      throw e;
    }
  },
);
