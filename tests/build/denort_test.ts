/**
 * Validation of a supplied denort runtime, with fake files: the real denort
 * cannot be downloaded here, but the full deno binary is at hand.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import {
  crc32,
  DenortError,
  findDenort,
  readSingleEntryZip,
  validateDenort,
} from "../../scripts/build/denort.ts";
import { ROOT } from "../../scripts/build.ts";
import { e2eTest } from "../e2e/env.ts";

const VERSION = "2.9.6";
const FULL_DENO = join(
  ROOT,
  "node_modules",
  "@deno",
  "linux-x64-glibc",
  "deno",
);

/** A minimal x86_64 ELF header followed by `text`. */
function fakeElf(text: string, machine = 62): Uint8Array {
  const head = new Uint8Array(64);
  head.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]);
  head[16] = 2; // ET_EXEC
  head[18] = machine;
  const body = new TextEncoder().encode(`\0${text}\0`);
  const out = new Uint8Array(head.length + body.length);
  out.set(head);
  out.set(body, head.length);
  return out;
}

const FAKE_DENORT = fakeElf(
  `denover${VERSION}${VERSION}+e518fbdDeno/${VERSION}Deno/${VERSION}+e518fbd cli/rt/run.rs`,
);

/** A zip archive of `entries`, deflated (method 8) or stored (0). */
async function zip(
  entries: { name: string; data: Uint8Array }[],
  deflate = true,
): Promise<Uint8Array> {
  const enc = new TextEncoder();
  const parts: Uint8Array[] = [];
  const central: Uint8Array[] = [];
  let off = 0;
  for (const e of entries) {
    const name = enc.encode(e.name);
    const body = deflate
      ? new Uint8Array(
        await new Response(
          new Blob([e.data as Uint8Array<ArrayBuffer>]).stream().pipeThrough(
            new CompressionStream("deflate-raw"),
          ),
        ).arrayBuffer(),
      )
      : e.data;
    const crc = crc32(e.data);
    const local = new Uint8Array(30 + name.length);
    const l = new DataView(local.buffer);
    l.setUint32(0, 0x04034b50, true);
    l.setUint16(4, 20, true);
    l.setUint16(8, deflate ? 8 : 0, true);
    l.setUint32(14, crc, true);
    l.setUint32(18, body.length, true);
    l.setUint32(22, e.data.length, true);
    l.setUint16(26, name.length, true);
    local.set(name, 30);
    const cd = new Uint8Array(46 + name.length);
    const c = new DataView(cd.buffer);
    c.setUint32(0, 0x02014b50, true);
    c.setUint16(6, 20, true);
    c.setUint16(10, deflate ? 8 : 0, true);
    c.setUint32(16, crc, true);
    c.setUint32(20, body.length, true);
    c.setUint32(24, e.data.length, true);
    c.setUint16(28, name.length, true);
    c.setUint32(42, off, true);
    cd.set(name, 46);
    parts.push(local, body);
    central.push(cd);
    off += local.length + body.length;
  }
  const cdSize = central.reduce((n, c) => n + c.length, 0);
  const eocd = new Uint8Array(22);
  const d = new DataView(eocd.buffer);
  d.setUint32(0, 0x06054b50, true);
  d.setUint16(8, entries.length, true);
  d.setUint16(10, entries.length, true);
  d.setUint32(12, cdSize, true);
  d.setUint32(16, off, true);
  const all = [...parts, ...central, eocd];
  const out = new Uint8Array(all.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of all) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

function rejects(fn: () => unknown, re: RegExp): void {
  assert.throws(
    fn,
    (e: unknown) => e instanceof DenortError && re.test(e.message),
  );
}

Deno.test("denort: a fake denort of the right version is accepted", () => {
  validateDenort(FAKE_DENORT, VERSION, "fake");
});

Deno.test("denort: a file that is not ELF is refused", () => {
  rejects(
    () =>
      validateDenort(
        new TextEncoder().encode("#!/bin/sh\n".repeat(20)),
        VERSION,
        "x",
      ),
    /x is not an ELF executable/,
  );
});

Deno.test("denort: an ELF for another machine is refused", () => {
  rejects(
    () => validateDenort(fakeElf(`Deno/${VERSION}`, 183), VERSION, "arm"),
    /not for x86_64/,
  );
});

Deno.test("denort: the full deno binary is refused as such", () => {
  rejects(
    () => validateDenort(Deno.readFileSync(FULL_DENO), VERSION, "deno"),
    /deno is the full deno CLI, not the denort runtime/,
  );
});

Deno.test("denort: another version is refused, naming both", () => {
  rejects(
    () => validateDenort(fakeElf("Deno/2.9.5 Deno/2.9.5+abc"), VERSION, "old"),
    /old is denort 2\.9\.5, but this build needs Deno 2\.9\.6/,
  );
  // 2.9.60 is not 2.9.6.
  rejects(
    () => validateDenort(fakeElf("Deno/2.9.60"), VERSION, "x"),
    /2\.9\.60/,
  );
});

Deno.test("denort: zip archives are read, stored or deflated, and checked", async () => {
  for (const deflate of [true, false]) {
    const e = await readSingleEntryZip(
      await zip([{ name: "denort", data: FAKE_DENORT }], deflate),
      "z",
    );
    assert.equal(e.name, "denort");
    assert.deepEqual(e.data, FAKE_DENORT);
  }
  const two = await zip([{ name: "denort", data: FAKE_DENORT }, {
    name: "README",
    data: new Uint8Array(3),
  }]);
  await assert.rejects(readSingleEntryZip(two, "z"), /holds 2 entries/);
  const corrupt = await zip([{ name: "denort", data: FAKE_DENORT }], false);
  corrupt[40] ^= 1;
  await assert.rejects(readSingleEntryZip(corrupt, "z"), /corrupt/);
  await assert.rejects(
    readSingleEntryZip(new Uint8Array(100), "z"),
    /not a zip archive/,
  );
});

Deno.test("denort: findDenort uses DENORT_BIN, else the zip in DENO_DIR", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "lazyd-denort-" });
  try {
    const extractDir = join(dir, "extract");
    const envOf = (vars: Record<string, string>) => (n: string) => vars[n];
    // Nothing supplied.
    assert.equal(
      await findDenort(VERSION, { env: envOf({ HOME: dir }), extractDir }),
      undefined,
    );
    // DENORT_BIN: used as it is once valid; the full deno is an error.
    const bin = join(dir, "denort");
    Deno.writeFileSync(bin, FAKE_DENORT);
    const got = await findDenort(VERSION, {
      env: envOf({ DENORT_BIN: bin }),
      extractDir,
    });
    assert.equal(got?.path, bin);
    await assert.rejects(
      findDenort(VERSION, {
        env: envOf({ DENORT_BIN: FULL_DENO }),
        extractDir,
      }),
      /full deno CLI, not the denort runtime/,
    );
    await assert.rejects(
      findDenort(VERSION, {
        env: envOf({ DENORT_BIN: join(dir, "nope") }),
        extractDir,
      }),
      /cannot be read/,
    );
    // The zip where deno compile looks, under $DENO_DIR.
    const denoDir = join(dir, "deno-dir");
    const zipDir = join(denoDir, "dl", "release", `v${VERSION}`);
    Deno.mkdirSync(zipDir, { recursive: true });
    const zipPath = join(zipDir, "denort-x86_64-unknown-linux-gnu.zip");
    Deno.writeFileSync(
      zipPath,
      await zip([{ name: "denort", data: FAKE_DENORT }]),
    );
    const z = await findDenort(VERSION, {
      env: envOf({ DENO_DIR: denoDir }),
      extractDir,
    });
    assert.equal(z?.source, zipPath);
    assert.deepEqual(Deno.readFileSync(z!.path), FAKE_DENORT);
    // ... found through HOME's default cache too; a wrong entry is an error.
    const homeZip = join(dir, ".cache", "deno", "dl", "release", `v${VERSION}`);
    Deno.mkdirSync(homeZip, { recursive: true });
    Deno.writeFileSync(
      join(homeZip, "denort-x86_64-unknown-linux-gnu.zip"),
      await zip([{ name: "deno", data: FAKE_DENORT }]),
    );
    await assert.rejects(
      findDenort(VERSION, { env: envOf({ HOME: dir }), extractDir }),
      /holds "deno", expected "denort"/,
    );
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("denort: the build stops with a clear error for a wrong DENORT_BIN", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      join(ROOT, "scripts", "build.ts"),
      "--entry",
      "tests/build/fixtures/entry.ts",
      "--out",
      join(ROOT, ".cache", "build-test", "never", "lazyd"),
    ],
    env: { DENORT_BIN: FULL_DENO },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const err = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 1);
  assert.match(
    err,
    /build: error: DENORT_BIN=.* is the full deno CLI, not the denort runtime/,
  );
});

e2eTest("denort: a valid DENORT_BIN makes a deno compile build", {
  needs: ["gcc"],
}, async () => {
  // A stand-in runtime: a real ELF that passes validation and that
  // deno compile can append to; it cannot run the program, so it only
  // says who it is.
  const dir = Deno.makeTempDirSync({ prefix: "lazyd-compile-" });
  try {
    const src = join(dir, "denort.c");
    Deno.writeTextFileSync(
      src,
      `#include <stdio.h>\nconst char *ua = "Deno/${VERSION}+standin";\n` +
        `int main(void) { puts("stand-in denort"); return 0; }\n`,
    );
    const bin = join(dir, "denort");
    const cc = await new Deno.Command("gcc", { args: ["-O2", "-o", bin, src] })
      .output();
    assert.ok(cc.success);
    const out = join(dir, "lazyd");
    const r = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        join(ROOT, "scripts", "build.ts"),
        "--entry",
        "tests/build/fixtures/entry.ts",
        "--out",
        out,
      ],
      env: { DENORT_BIN: bin },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(r.stdout) +
      new TextDecoder().decode(r.stderr);
    assert.equal(r.code, 0, text);
    assert.match(text, /deno compile with DENORT_BIN=/);
    assert.match(text, /mode compile, Deno 2\.9\.6/);
    const info = JSON.parse(Deno.readTextFileSync(`${out}.buildinfo`));
    assert.equal(info.mode, "compile");
    assert.equal(info.runtimeSource, `DENORT_BIN=${bin}`);
    assert.ok(info.flags.includes("--allow-all"));
    const run = await new Deno.Command(out, { stdout: "piped" }).output();
    assert.equal(new TextDecoder().decode(run.stdout), "stand-in denort\n");
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
