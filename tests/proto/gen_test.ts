/**
 * proto/gen is generated code checked in: regenerating it from proto/*.proto
 * must change nothing (run `deno task gen` after editing a .proto file).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { ROOT, runOk } from "../e2e/env.ts";

Deno.test("proto/gen is what `deno task gen` makes of proto/*.proto", async () => {
  const tmp = Deno.makeTempDirSync({ prefix: "lazyd-proto-" });
  try {
    for (const e of Deno.readDirSync(join(ROOT, "proto"))) {
      if (e.isFile) {
        Deno.copyFileSync(join(ROOT, "proto", e.name), join(tmp, e.name));
      }
    }
    // The same generator, addressed from the temporary directory.
    const gen = Deno.readTextFileSync(join(tmp, "buf.gen.yaml"))
      .replace(
        "../scripts/protoc-gen-es",
        join(ROOT, "scripts", "protoc-gen-es"),
      );
    Deno.writeTextFileSync(join(tmp, "buf.gen.yaml"), gen);
    await runOk(join(ROOT, "node_modules", ".bin", "buf"), ["generate"], {
      cwd: tmp,
    });
    await runOk(Deno.execPath(), [
      "fmt",
      "--no-config",
      "--quiet",
      join(tmp, "gen"),
    ]);
    const want = [...Deno.readDirSync(join(tmp, "gen"))].map((e) => e.name)
      .sort();
    const have = [...Deno.readDirSync(join(ROOT, "proto", "gen"))].map((e) =>
      e.name
    ).sort();
    assert.deepEqual(have, want, "the same generated files");
    for (const f of want) {
      assert.equal(
        Deno.readTextFileSync(join(ROOT, "proto", "gen", f)),
        Deno.readTextFileSync(join(tmp, "gen", f)),
        `proto/gen/${f} is stale: run deno task gen`,
      );
    }
  } finally {
    Deno.removeSync(tmp, { recursive: true });
  }
});
