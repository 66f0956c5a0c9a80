/**
 * LocalSource: page contents from image files across a parent chain,
 * zeros for pages no image holds, ImageErrors for files that cannot
 * supply them, and its statistics.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  ImageDir,
  ImageError,
  locatePages,
  PE_LAZY,
  PE_PARENT,
  PE_PRESENT,
  readStamp,
  type SyntheticEntry,
  writeImageDir,
} from "../../src/images/mod.ts";
import { LocalSource, type PageSource } from "../../src/source/mod.ts";

const P = 4096;
const A = 0x7f0000000000; // a typical x86_64 mmap address, above 2^32
const PID = 4;

/** A scratch directory with its real path (parents are reported resolved). */
async function withChain(
  fn: (dirs: { top: string; p: string; gp: string }) => void | Promise<void>,
): Promise<void> {
  const tmp = Deno.realPathSync(
    Deno.makeTempDirSync({ prefix: "lazyd-source-" }),
  );
  try {
    const vmas = [{ start: A, end: A + 16 * P }];
    const dir = (
      name: string,
      tag: number,
      pagemap: SyntheticEntry[],
      parent?: string,
    ) =>
      writeImageDir(join(tmp, name), {
        processes: [{ pid: PID, vmas, pagemap }],
        parent,
        tag,
      });
    // grandparent (tag 1): pages 0..7
    dir("gp", 1, [{ vaddr: A, nrPages: 8, flags: PE_PRESENT }]);
    // parent (tag 2): 0..1 in gp, 2..3 its own, 4..5 in gp
    dir("p", 2, [
      { vaddr: A, nrPages: 2, flags: PE_PARENT },
      { vaddr: A + 2 * P, nrPages: 2, flags: PE_PRESENT },
      { vaddr: A + 4 * P, nrPages: 2, flags: PE_PARENT },
    ], "../gp");
    // top (tag 3): 0 lazy in the chain, 1..2 in the chain, 3..4 lazy in the
    // chain, 5 in no entry (zero), 6..7 lazy here, 8 "in the parent" where
    // the parent has no entry (zero), 9 lazy without data.
    dir("top", 3, [
      { vaddr: A, nrPages: 1, flags: PE_LAZY | PE_PARENT },
      { vaddr: A + P, nrPages: 2, flags: PE_PARENT },
      { vaddr: A + 3 * P, nrPages: 2, flags: PE_LAZY | PE_PARENT },
      { vaddr: A + 6 * P, nrPages: 2, flags: PE_LAZY | PE_PRESENT },
      { vaddr: A + 8 * P, nrPages: 1, flags: PE_PARENT },
      { vaddr: A + 9 * P, nrPages: 1, flags: PE_LAZY },
    ], "../p");
    await fn({
      top: join(tmp, "top"),
      p: join(tmp, "p"),
      gp: join(tmp, "gp"),
    });
  } finally {
    Deno.removeSync(tmp, { recursive: true });
  }
}

/** The tag of each page of `buf` (0 for a page of zeros), checking each page's address stamp. */
function tags(buf: Uint8Array, image: number): number[] {
  const out: number[] = [];
  for (let off = 0; off < buf.length; off += P) {
    const page = buf.subarray(off, off + P);
    if (page.every((b) => b === 0)) {
      out.push(0);
      continue;
    }
    const s = readStamp(page);
    assert.equal(s.addr, image + off, `stamp of page ${off / P}`);
    out.push(s.tag);
  }
  return out;
}

function imageError(fn: () => unknown): ImageError {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof ImageError, `expected ImageError, got ${e}`);
    return e;
  }
  assert.fail("no ImageError");
}

/** Paths of the pages files this process has open. */
function openPagesFiles(): string[] {
  const out: string[] = [];
  for (const e of Deno.readDirSync("/proc/self/fd")) {
    try {
      const t = Deno.readLinkSync(`/proc/self/fd/${e.name}`);
      if (/\/pages-\d+\.img$/.test(t)) out.push(t);
    } catch { /* closed meanwhile */ }
  }
  return out.sort();
}

Deno.test("local source: reads across a 3-level parent chain, zeros where no image has data", async () => {
  await withChain(({ top, p, gp }) => {
    const src = new LocalSource(ImageDir.open(top));
    try {
      assert.equal(src.kind, "local");
      // Pages 0..8 in one read; the buffer starts dirty so zeros are written.
      const buf = new Uint8Array(9 * P).fill(0xcc);
      src.read(PID, { image: A, into: buf });
      assert.deepEqual(tags(buf, A), [1, 1, 2, 2, 1, 0, 3, 3, 0]);

      const stats = src.stats();
      assert.equal(stats.kind, "local");
      assert.deepEqual(stats.bytesByFile, {
        [join(gp, "pages-1.img")]: 3 * P, // pages 0, 1, 4
        [join(p, "pages-1.img")]: 2 * P, // pages 2, 3
        [join(top, "pages-1.img")]: 2 * P, // pages 6, 7
      });
      assert.equal(stats.zeroBytes, 2 * P); // pages 5, 8

      // Smaller reads anywhere; the counters add up.
      const one = new Uint8Array(P);
      src.read(PID, { image: A + 3 * P, into: one });
      assert.deepEqual(tags(one, A + 3 * P), [2]);
      const two = new Uint8Array(2 * P);
      src.read(PID, { image: A + 7 * P, into: two });
      assert.deepEqual(tags(two, A + 7 * P), [3, 0]);
      // Beyond every entry: zeros.
      const far = new Uint8Array(P).fill(1);
      src.read(PID, { image: A + 100 * P, into: far });
      assert.ok(far.every((b) => b === 0));
      const after = src.stats();
      assert.equal(after.bytesByFile[join(p, "pages-1.img")], 3 * P);
      assert.equal(after.bytesByFile[join(top, "pages-1.img")], 3 * P);
      assert.equal(after.zeroBytes, 4 * P);
    } finally {
      src.close();
    }
  });
});

Deno.test("local source: lazy pages without data are an ImageError", async () => {
  await withChain(({ top }) => {
    const src = new LocalSource(ImageDir.open(top));
    try {
      const e = imageError(() =>
        src.read(PID, { image: A + 9 * P, into: new Uint8Array(P) })
      );
      assert.match(e.message, /--page-server/);
      assert.equal(e.file, join(top, "pagemap-4.img"));
      assert.deepEqual(src.stats().bytesByFile, {});
    } finally {
      src.close();
    }
  });
});

Deno.test("local source: a pages file too short names the file and the offset", async () => {
  await withChain(({ top, p }) => {
    // Short before the source ever looked: the image layer finds it.
    Deno.truncateSync(join(p, "pages-1.img"), P);
    const src = new LocalSource(ImageDir.open(top));
    try {
      const e = imageError(() =>
        src.read(PID, { image: A + 3 * P, into: new Uint8Array(P) })
      );
      assert.equal(e.file, join(p, "pages-1.img"));
      assert.equal(e.offset, P); // page 3 is the parent's second page
      assert.match(e.reason, /pages file too short/);
    } finally {
      src.close();
    }

    // Short after the sizes were read (truncated while lazyd runs): the
    // read itself comes up short.
    const dir = ImageDir.open(top);
    const live = new LocalSource(dir);
    try {
      const buf = new Uint8Array(2 * P);
      live.read(PID, { image: A + 6 * P, into: buf });
      assert.deepEqual(tags(buf, A + 6 * P), [3, 3]);
      Deno.truncateSync(join(top, "pages-1.img"), P + 100);
      const e = imageError(() =>
        live.read(PID, { image: A + 6 * P, into: buf })
      );
      assert.equal(e.file, join(top, "pages-1.img"));
      assert.equal(e.offset, P + 100);
      assert.equal(
        e.reason,
        `pages file too short: ${P - 100} of ${2 * P} bytes missing`,
      );
      // Failed reads are not counted.
      assert.equal(live.stats().bytesByFile[join(top, "pages-1.img")], 2 * P);
    } finally {
      live.close();
    }
  });
});

Deno.test("local source: a pages file that cannot be opened is an ImageError", async () => {
  await withChain(({ top, gp }) => {
    const dir = ImageDir.open(top);
    // The image layer has seen the file (and cached its size); then it goes.
    locatePages(dir, { pid: PID, addr: A, pages: 1 });
    Deno.removeSync(join(gp, "pages-1.img"));
    const src = new LocalSource(dir);
    try {
      const e = imageError(() =>
        src.read(PID, { image: A, into: new Uint8Array(P) })
      );
      assert.equal(e.file, join(gp, "pages-1.img"));
      assert.equal(e.offset, 0);
      assert.match(e.reason, /open|No such file|ENOENT/);
    } finally {
      src.close();
    }
  });
});

Deno.test("local source: files are opened once, on first use, and closed by close()", async () => {
  await withChain(({ top, p, gp }) => {
    const before = openPagesFiles();
    const src = new LocalSource(ImageDir.open(top));
    try {
      assert.deepEqual(openPagesFiles(), before, "nothing opened up front");
      const buf = new Uint8Array(9 * P);
      src.read(PID, { image: A, into: buf });
      src.read(PID, { image: A, into: buf });
      const files = [gp, p, top].map((d) => join(d, "pages-1.img")).sort();
      assert.deepEqual(
        openPagesFiles().filter((f) => !before.includes(f)),
        files,
        "one fd per file, however many reads",
      );
      src.close();
      assert.deepEqual(openPagesFiles(), before);
      // Reading again after close() reopens the files.
      src.read(PID, { image: A + 6 * P, into: new Uint8Array(P) });
      assert.equal(openPagesFiles().length, before.length + 1);
    } finally {
      src.close();
    }
    assert.deepEqual(openPagesFiles(), before);
  });
});

Deno.test("local source: fetch reads into its own page-aligned buffer, at once", async () => {
  await withChain(({ top }) => {
    const src = new LocalSource(ImageDir.open(top));
    try {
      // Synchronous: urgent or not, it always takes a request.
      const asSource: PageSource = src;
      assert.equal(asSource.canFetch(true), true);
      assert.equal(asSource.canFetch(false), true);
      const req = { pid: PID, image: A, len: 9 * P, urgent: true };
      const a = src.fetch(req);
      assert.equal(a.bytes.byteLength, 9 * P);
      assert.equal(a.address % P, 0, "page aligned, for UFFDIO_COPY");
      assert.deepEqual(tags(a.bytes, A), [1, 1, 2, 2, 1, 0, 3, 3, 0]);
      // The bytes are what the kernel copies from: the address is theirs.
      const view = new Deno.UnsafePointerView(
        Deno.UnsafePointer.create(BigInt(a.address))!,
      );
      assert.equal(view.getUint32(8), a.bytes[8] | (a.bytes[9] << 8));
      a.release();

      // One buffer, reused while requests fit in it...
      const b = src.fetch({ ...req, image: A + 6 * P, len: 2 * P });
      assert.equal(b.address, a.address);
      assert.deepEqual(tags(b.bytes, A + 6 * P), [3, 3]);
      b.release();
      // ...and replaced by a bigger one when they do not (8 MiB > 1 MiB).
      const big = 2048;
      const c = src.fetch({ ...req, image: A + 16 * P, len: big * P });
      assert.equal(c.bytes.byteLength, big * P);
      assert.ok(c.bytes.every((x) => x === 0), "no entry there: zeros");
      assert.equal(src.stats().zeroBytes, 2 * P + big * P);
      c.release();

      // Errors are the image layer's.
      assert.ok(
        imageError(() => src.fetch({ ...req, image: A + 9 * P, len: P }))
          .message.includes("--page-server"),
      );
    } finally {
      src.close();
    }
  });
});
