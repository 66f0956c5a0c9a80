import assert from "node:assert/strict";
import { join, relative } from "node:path";
import {
  ImageDir,
  ImageError,
  MAX_PARENT_DEPTH,
  PE_PARENT,
  PE_PRESENT,
  writeImageDir,
} from "../../src/images/mod.ts";
import { assertImageError, withTempDir } from "./_helpers.ts";

const proc = (pid: number) => ({
  pid,
  vmas: [{ start: 0x10000, end: 0x20000 }],
  pagemap: [{ vaddr: 0x10000, nrPages: 2, flags: PE_PRESENT }],
});

Deno.test("ImageDir: opening needs a directory; the path becomes absolute", async () => {
  await withTempDir((tmp) => {
    writeImageDir(join(tmp, "img"), { processes: [proc(1)] });
    const dir = ImageDir.open(relative(Deno.cwd(), join(tmp, "img")));
    assert.equal(dir.path, join(tmp, "img"));
    assert.equal(dir.depth, 0);
    assertImageError(() => ImageDir.open(join(tmp, "img", "pstree.img")), {
      reason: /not a directory/,
    });
    assertImageError(() => ImageDir.open(join(tmp, "none")), {
      file: join(tmp, "none"),
      offset: 0,
      reason: /No such file/,
    });
  });
});

Deno.test("ImageDir: readers parse once and cache", async () => {
  await withTempDir((tmp) => {
    writeImageDir(tmp, { processes: [proc(1), { ...proc(2), ppid: 1 }] });
    const dir = ImageDir.open(tmp);
    assert.equal(dir.inventory().imgVersion, 2);
    assert.deepEqual(dir.pstree().map((p) => [p.pid, p.ppid]), [[1, 0], [
      2,
      1,
    ]]);
    assert.equal(dir.pstree(), dir.pstree());
    assert.equal(dir.mm(1), dir.mm(1));
    assert.equal(dir.pagemap(2), dir.pagemap(2));
    assert.deepEqual(dir.mm(2).vmas.map((v) => [v.start, v.end]), [[
      0x10000,
      0x20000,
    ]]);
    assert.equal(dir.pagemap(2).pagesId, 2);
    assert.deepEqual(dir.pagesFile(2), {
      path: join(tmp, "pages-2.img"),
      size: 2 * 4096,
      exists: true,
    });
    // Cached: a file removed after the first read does not matter.
    Deno.removeSync(join(tmp, "pagemap-1.img"));
    dir.pagemap(2);
    assert.equal(dir.hasPagemap(2), true);
    assert.equal(dir.hasPagemap(1), false);
  });
});

Deno.test("ImageDir: missing images are ImageErrors; a missing pages file is empty", async () => {
  await withTempDir((tmp) => {
    writeImageDir(tmp, { processes: [{ pid: 1 }] });
    const dir = ImageDir.open(tmp);
    assertImageError(() => dir.pagemap(1), {
      file: join(tmp, "pagemap-1.img"),
      offset: 0,
      reason: /No such file/,
    });
    assertImageError(() => dir.mm(1), { file: join(tmp, "mm-1.img") });
    assert.equal(dir.hasPagemap(1), false);
    assert.deepEqual(dir.pagesFile(9), {
      path: join(tmp, "pages-9.img"),
      size: 0,
      exists: false,
    });
    Deno.mkdirSync(join(tmp, "pages-8.img"));
    assertImageError(() => dir.pagesFile(8), { reason: /not a regular file/ });
    assert.throws(() => dir.pagemap(0), RangeError);
    assert.throws(() => dir.mm(1.5), RangeError);
    Deno.removeSync(join(tmp, "inventory.img"));
    assertImageError(() => ImageDir.open(tmp).pstree(), {
      file: join(tmp, "inventory.img"),
    });
  });
});

Deno.test("ImageDir: image-set version 1 has no head magic", async () => {
  await withTempDir((tmp) => {
    writeImageDir(tmp, { imgVersion: 1, processes: [proc(1)] });
    const head = Deno.readFileSync(join(tmp, "pagemap-1.img")).subarray(0, 4);
    assert.deepEqual([...head], [0x25, 0x40, 0x08, 0x56]);
    const dir = ImageDir.open(tmp);
    assert.equal(dir.inventory().imgVersion, 1);
    assert.equal(dir.pagemap(1).entries.length, 1);
    assert.equal(dir.pstree()[0].pid, 1);
  });
});

Deno.test("ImageDir: parent links, relative and absolute, several levels", async () => {
  await withTempDir((tmp) => {
    writeImageDir(join(tmp, "1"), { processes: [proc(1)] });
    writeImageDir(join(tmp, "2"), { processes: [proc(1)], parent: "../1" });
    writeImageDir(join(tmp, "3"), {
      processes: [proc(1)],
      parent: join(tmp, "2"),
    });
    const top = ImageDir.open(join(tmp, "3"));
    const chain = top.chain();
    const real = Deno.realPathSync(tmp);
    assert.deepEqual(chain.map((d) => d.path), [
      join(tmp, "3"),
      join(real, "2"),
      join(real, "1"),
    ]);
    assert.deepEqual(chain.map((d) => d.depth), [0, 1, 2]);
    assert.equal(top.parent(), chain[1]);
    assert.equal(chain[2].parent(), undefined);
    // A real directory named "parent" works too, as it does for CRIU.
    writeImageDir(join(tmp, "4", "parent"), { processes: [proc(1)] });
    writeImageDir(join(tmp, "4"), { processes: [proc(1)] });
    assert.equal(
      ImageDir.open(join(tmp, "4")).parent()?.path,
      join(real, "4", "parent"),
    );
  });
});

Deno.test("ImageDir: a relative link is resolved against the link's directory", async () => {
  await withTempDir((tmp) => {
    writeImageDir(join(tmp, "a", "1"), { processes: [proc(1)] });
    writeImageDir(join(tmp, "a", "2"), {
      processes: [proc(1)],
      parent: "../1",
    });
    // Reach "2" through a symlink elsewhere: "../1" still means a/1.
    Deno.mkdirSync(join(tmp, "b"));
    Deno.symlinkSync(join(tmp, "a", "2"), join(tmp, "b", "2"));
    const parent = ImageDir.open(join(tmp, "b", "2")).parent();
    assert.equal(parent?.path, join(Deno.realPathSync(tmp), "a", "1"));
  });
});

Deno.test("ImageDir: a parent uses the opened directory's img_version", async () => {
  await withTempDir((tmp) => {
    writeImageDir(join(tmp, "1"), { imgVersion: 1, processes: [proc(1)] });
    Deno.removeSync(join(tmp, "1", "inventory.img"));
    writeImageDir(join(tmp, "2"), {
      imgVersion: 1,
      processes: [proc(1)],
      parent: "../1",
    });
    assert.equal(
      ImageDir.open(join(tmp, "2")).parent()!.pagemap(1).entries.length,
      1,
    );
  });
});

Deno.test("ImageDir: dangling, non-directory, looping and too deep parents", async () => {
  await withTempDir((tmp) => {
    const p = (name: string, parent?: string) => {
      writeImageDir(join(tmp, name), {
        processes: [{
          pid: 1,
          pagemap: [{ vaddr: 0, nrPages: 1, flags: PE_PARENT }],
        }],
        parent,
      });
      return ImageDir.open(join(tmp, name));
    };
    assert.equal(p("dangling", "../nowhere").parent(), undefined);
    assertImageError(() => p("file", "./inventory.img").parent(), {
      file: join(tmp, "file", "parent"),
      offset: 0,
      reason: /is not a directory/,
    });
    assertImageError(() => p("self", ".").parent(), {
      reason: /parent chain loops back to/,
    });
    assertImageError(() => p("eloop", "parent").parent(), {
      file: join(tmp, "eloop", "parent"),
    });
    p("x", "../y");
    const y = p("y", "../x");
    const err = assertImageError(() => y.chain(), {
      reason: /parent chain loops back to/,
    });
    assert.equal(err.file, join(Deno.realPathSync(tmp), "x", "parent"));
    // Exactly MAX_PARENT_DEPTH levels are fine, one more is not.
    for (let i = 0; i <= MAX_PARENT_DEPTH + 1; i++) {
      p(`d${i}`, i > 0 ? `../d${i - 1}` : undefined);
    }
    assert.equal(
      ImageDir.open(join(tmp, `d${MAX_PARENT_DEPTH}`)).chain().length,
      MAX_PARENT_DEPTH + 1,
    );
    assertImageError(
      () => ImageDir.open(join(tmp, `d${MAX_PARENT_DEPTH + 1}`)).chain(),
      {
        reason: /deeper than 64 levels/,
      },
    );
  });
});

Deno.test("ImageDir: errors are only ever ImageErrors", async () => {
  await withTempDir((tmp) => {
    Deno.writeFileSync(join(tmp, "inventory.img"), new Uint8Array([1, 2, 3]));
    const dir = ImageDir.open(tmp);
    for (
      const f of [
        () => dir.inventory(),
        () => dir.pstree(),
        () => dir.mm(1),
        () => dir.pagemap(1),
      ]
    ) {
      assert.throws(f, ImageError);
    }
  });
});
