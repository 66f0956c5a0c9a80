// Hostile images: truncations, flipped magics, huge lengths and thousands of
// seeded random mutations of real and synthetic image directories. Every
// case must parse or throw an ImageError, quickly. A failure names the seed
// and case; rerun one with LAZYD_FUZZ_SEED=<seed> (and LAZYD_FUZZ_CASES=N for
// a longer run).
import assert from "node:assert/strict";
import { join } from "node:path";
import { e2eTest } from "../e2e/env.ts";
import {
  ImageDir,
  ImageError,
  locatePages,
  PAGE_SIZE,
  PE_LAZY,
  PE_PARENT,
  PE_PRESENT,
  writeImageDir,
} from "../../src/images/mod.ts";
import { withTempDir } from "./_helpers.ts";
import { makeRealDumps } from "./_real_dump.ts";

const SEED = Number(Deno.env.get("LAZYD_FUZZ_SEED") ?? 0x1a2d5eed);
const CASES = Number(Deno.env.get("LAZYD_FUZZ_CASES") ?? 2000);
const CASE_MS = 1000;
const TOTAL_MS = 120_000;

/** Everything the daemon reads at start-up and per fault, on one directory. */
function readAll(path: string): void {
  const dir = ImageDir.open(path);
  dir.inventory();
  dir.chain();
  for (const { pid } of dir.pstree()) {
    if (!dir.hasPagemap(pid)) continue;
    const pm = dir.pagemap(pid);
    dir.pagesFile(pm.pagesId);
    const requests = pm.entries.slice(0, 64).map((e) => ({
      addr: e.vaddr,
      pages: e.nrPages,
    }));
    for (const v of dir.mm(pid).vmas.slice(0, 64)) {
      requests.push({ addr: v.start, pages: (v.end - v.start) / PAGE_SIZE });
    }
    for (const r of requests) {
      try {
        locatePages(dir, { pid, addr: r.addr, pages: Math.min(r.pages, 1024) });
      } catch (err) {
        // A lazy entry without data is a legal outcome for one request;
        // keep looking at the others.
        if (!(err instanceof ImageError)) throw err;
      }
    }
  }
}

/** xorshift32: small, fast, and the same everywhere. */
function rng(seed: number): (n: number) => number {
  let s = (seed >>> 0) || 1;
  return (n) => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s % n;
  };
}

/** One random edit: flip, insert, delete, overwrite, huge length, truncate. */
function mutate(data: Uint8Array, rand: (n: number) => number): Uint8Array {
  const at = rand(data.length + 1);
  const junk = () => Uint8Array.from({ length: 1 + rand(8) }, () => rand(256));
  const cat = (...parts: Uint8Array[]) => {
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let pos = 0;
    for (const p of parts) {
      out.set(p, pos);
      pos += p.length;
    }
    return out;
  };
  switch (rand(6)) {
    case 0: {
      const out = data.slice();
      if (at < out.length) out[at] ^= 1 << rand(8);
      return out;
    }
    case 1:
      return cat(data.subarray(0, at), junk(), data.subarray(at));
    case 2:
      return cat(data.subarray(0, at), data.subarray(at + 1 + rand(8)));
    case 3: {
      const out = data.slice();
      out.set(junk().subarray(0, Math.max(0, out.length - at)), at);
      return out;
    }
    case 4: {
      const out = data.slice();
      const word = [0xffffffff, 0x80000000, 0x7fffffff, data.length][rand(4)];
      if (at + 4 <= out.length) {
        new DataView(out.buffer).setUint32(at, word, true);
      }
      return out;
    }
    default:
      return data.subarray(0, at);
  }
}

/** The images this layer reads (not the raw pages-*.img), by path. */
const READ = /^(inventory|pstree|mm-\d+|pagemap-\d+)\.img$/;

/** The protobuf images of a directory tree that this layer reads, by path. */
function protobufImages(root: string): Map<string, Uint8Array> {
  const out = new Map<string, Uint8Array>();
  const walk = (dir: string) => {
    for (const e of Deno.readDirSync(dir)) {
      const p = join(dir, e.name);
      if (e.isDirectory) walk(p);
      else if (e.isFile && READ.test(e.name)) {
        out.set(p, Deno.readFileSync(p));
      }
    }
  };
  walk(root);
  return out;
}

/** Runs fuzz cases on a working copy at `root` (top directory `top`). */
class Fuzzer {
  readonly images: Map<string, Uint8Array>;
  readonly files: string[];
  cases = 0;
  parsed = 0;
  readonly #start = performance.now();

  constructor(
    readonly root: string,
    readonly top: string,
    readonly label: string,
  ) {
    this.images = protobufImages(root);
    this.files = [...this.images.keys()].sort();
  }

  /** Writes `edits`, runs the read path, restores the originals. */
  run(name: string, edits: Map<string, Uint8Array>): void {
    for (const [file, data] of edits) Deno.writeFileSync(file, data);
    const t0 = performance.now();
    try {
      readAll(this.top);
      this.parsed++;
    } catch (err) {
      if (!(err instanceof ImageError)) {
        throw new Error(`${this.label} ${name}: ${err} (not an ImageError)`, {
          cause: err,
        });
      }
    } finally {
      for (const file of edits.keys()) {
        Deno.writeFileSync(file, this.images.get(file)!);
      }
    }
    const ms = performance.now() - t0;
    assert.ok(ms < CASE_MS, `${this.label} ${name} took ${ms.toFixed(0)} ms`);
    assert.ok(
      performance.now() - this.#start < TOTAL_MS,
      `${this.label}: fuzzing takes too long`,
    );
    this.cases++;
  }

  /** Truncation at every byte (record boundaries and inside records). */
  truncations(): void {
    for (const f of this.files) {
      const data = this.images.get(f)!;
      for (let len = 0; len < data.length; len++) {
        this.run(
          `truncate ${f} to ${len}`,
          new Map([[f, data.subarray(0, len)]]),
        );
      }
    }
  }

  /** Each magic byte flipped, and every record length made huge. */
  magicsAndLengths(): void {
    for (const f of this.files) {
      const data = this.images.get(f)!;
      for (let i = 0; i < Math.min(8, data.length); i++) {
        const bad = data.slice();
        bad[i] ^= 0xff;
        this.run(`flip magic byte ${i} of ${f}`, new Map([[f, bad]]));
      }
      const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
      const first = f.endsWith("inventory.img") ? 4 : 8;
      for (
        let pos = first;
        pos + 4 <= data.length;
        pos += 4 + view.getUint32(pos, true)
      ) {
        for (const len of [0xffffffff, 0x80000000, data.length - pos - 3]) {
          const bad = data.slice();
          new DataView(bad.buffer).setUint32(pos, len, true);
          this.run(`length ${len} at ${pos} of ${f}`, new Map([[f, bad]]));
        }
      }
    }
  }

  /** `count` seeded cases of 1-3 random edits to 1-2 files each. */
  random(count: number): void {
    for (let i = 0; i < count; i++) {
      const rand = rng(SEED + i);
      const edits = new Map<string, Uint8Array>();
      for (let k = 1 + rand(2); k > 0; k--) {
        const f = this.files[rand(this.files.length)];
        let data = edits.get(f) ?? this.images.get(f)!;
        for (let m = 1 + rand(3); m > 0; m--) data = mutate(data, rand);
        edits.set(f, data);
      }
      this.run(`seed ${SEED + i} (case ${i})`, edits);
    }
  }

  all(): void {
    readAll(this.top); // the unmodified directory parses
    this.truncations();
    this.magicsAndLengths();
    this.random(CASES);
    // Most random cases should still fail somewhere, but some must parse,
    // or the mutations never reach the deeper checks.
    assert.ok(this.parsed > 0, `${this.label}: no case parsed`);
  }
}

/** Two levels, two processes, every kind of entry, gaps. */
function synthetic(root: string): string {
  const P = PAGE_SIZE;
  writeImageDir(join(root, "1"), {
    tag: 1,
    processes: [
      {
        pid: 1,
        vmas: [{ start: 0x10000, end: 0x40000 }],
        pagemap: [
          { vaddr: 0x10000, nrPages: 8, flags: PE_LAZY | PE_PRESENT },
          { vaddr: 0x20000, nrPages: 2, flags: PE_PRESENT },
        ],
      },
      {
        pid: 2,
        ppid: 1,
        vmas: [{ start: 0x10000, end: 0x20000 }],
        pagemap: [{ vaddr: 0x10000, nrPages: 4 }],
      },
    ],
  });
  writeImageDir(join(root, "2"), {
    tag: 2,
    parent: "../1",
    processes: [
      {
        pid: 1,
        vmas: [{ start: 0x10000, end: 0x40000 }, {
          start: 0x7f0000000000,
          end: 0x7f0000000000 + 64 * P,
        }],
        pagemap: [
          { vaddr: 0x10000, nrPages: 4, flags: PE_PARENT },
          { vaddr: 0x14000, nrPages: 4, flags: PE_LAZY | PE_PARENT },
          { vaddr: 0x20000, nrPages: 3, flags: PE_LAZY | PE_PRESENT },
          { vaddr: 0x30000, nrPages: 1, flags: PE_PRESENT, nrPages64: true },
          { vaddr: 0x7f0000000000, nrPages: 16, flags: PE_LAZY | PE_PRESENT },
        ],
      },
      {
        pid: 2,
        ppid: 1,
        vmas: [{ start: 0x10000, end: 0x20000 }],
        pagemap: [{ vaddr: 0x10000, nrPages: 2, inParent: true }, {
          vaddr: 0x12000,
          nrPages: 1,
          flags: PE_LAZY,
        }],
      },
      { pid: 3, ppid: 1 },
    ],
  });
  return join(root, "2");
}

Deno.test("fuzz: a synthetic parent chain", async () => {
  await withTempDir((tmp) => {
    const top = synthetic(tmp);
    new Fuzzer(tmp, top, "synthetic").all();
    // The parent link itself: loops, dangling, pointing at a file.
    for (
      const target of [
        ".",
        "..",
        "../2",
        "../nowhere",
        "parent",
        "./inventory.img",
        "../1",
      ]
    ) {
      Deno.removeSync(join(top, "parent"));
      Deno.symlinkSync(target, join(top, "parent"));
      try {
        readAll(top);
      } catch (err) {
        assert.ok(err instanceof ImageError, `parent -> ${target}: ${err}`);
      }
    }
  });
});

e2eTest(
  "fuzz: real CRIU dumps",
  { needs: ["root", "criu", "gcc"] },
  async (t) => {
    const dumps = await makeRealDumps();
    try {
      for (
        const [label, path] of [["plain dump", dumps.plain], [
          "lazy dump",
          dumps.lazy,
        ]]
      ) {
        await t.step(label, () => new Fuzzer(path, path, label).all());
      }
    } finally {
      Deno.removeSync(dumps.base, { recursive: true });
    }
  },
);
